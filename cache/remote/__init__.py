"""Remote build cache: export cache records to, and import them from, places outside the state dir.

`--cache-to` writes the records a build made (cache key → the layer chain of its
result) plus their layer blobs to an OCI layout directory (`type=local`), a
registry (`type=registry`) or the image's own config (`type=inline`);
`--cache-from` reads them back so another machine's build hits the cache. The
format is in `cacheconfig`, the solver's hook in `protocol`, the build's glue in
`session`.
"""
