"""Storage and formats: video decoding, corpus listing, prompt manifests, RLE, Parquet schemas and writers."""
