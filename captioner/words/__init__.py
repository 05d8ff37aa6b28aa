"""Word ids and text: the vocabulary, and greedy and beam search over the decoder."""
