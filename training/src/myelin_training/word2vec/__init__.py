"""word2vec (skip-gram and CBOW) word vectors: training, evaluation and export (word2vec-*)."""
