"""Language models for text generation (generator-gpt-*, generator-gru-*): training and export."""
