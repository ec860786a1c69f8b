"""SAM 3's text side: the CLIP BPE tokenizer and the text encoder."""
