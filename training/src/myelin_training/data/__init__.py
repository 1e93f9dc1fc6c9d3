"""Dataset readers: IDX images, sentence pairs and plain-text corpora, with their checksums."""
