"""English-to-French translation: an encoder-decoder Transformer (translator-tatoeba, translator-multi30k)."""
