"""Input readers, writers and URL fetching."""

from .fetch import UrlFetcher, blocked_reason
from .readers import IMAGE_EXTENSIONS, Shard, is_url, plan_shards

__all__ = ["IMAGE_EXTENSIONS", "Shard", "UrlFetcher", "blocked_reason", "is_url", "plan_shards"]
