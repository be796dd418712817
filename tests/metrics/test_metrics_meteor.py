"""METEOR through one persistent Java process, equal to pycocoevalcap's Meteor."""

import shutil

import pytest

from fixtures_metrics import varied_sets
from pixscribe.metrics.meteor import Meteor, MeteorUnavailable
from pixscribe.metrics.tokenize import ptb_tokenize


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_equals_pycocoevalcap_and_process_is_reused():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.meteor.meteor import Meteor as RefMeteor

    gts, res = varied_sets(150, 5, seed=21)
    g, r = ptb_tokenize(gts), ptb_tokenize(res)
    ref_corpus, ref_per = RefMeteor().compute_score(g, r)
    with Meteor() as m:
        pid = m._p.pid
        corpus, per = m.compute_score(g, r)
        half = {k: g[k] for k in list(g)[:20]}
        c2, p2 = m.compute_score(half, {k: r[k] for k in half})
        assert m._p.pid == pid and m._p.poll() is None  # same process, still alive
    assert corpus == pytest.approx(ref_corpus, abs=1e-6)
    assert per == pytest.approx(ref_per, abs=1e-6)
    assert p2 == pytest.approx(per[:20], abs=1e-6)
    assert 0.0 < corpus < 1.0
    assert m._p.poll() is not None  # closed


def test_meteor_missing_jar_or_java_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXSCRIBE_METEOR_JAR", str(tmp_path / "nope.jar"))
    with pytest.raises(MeteorUnavailable, match="nope.jar: no such file"):
        Meteor()
    monkeypatch.delenv("PIXSCRIBE_METEOR_JAR")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA", raising=False)
    with pytest.raises(MeteorUnavailable, match="needs Java"):
        Meteor()
