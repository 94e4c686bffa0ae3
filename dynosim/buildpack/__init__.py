"""The slug builder: committed source, .slugignore, the Python buildpack's steps, the cache."""

from dynosim.buildpack.slug import Slug, build_slug, default_cache_dir

__all__ = ["Slug", "build_slug", "default_cache_dir"]
