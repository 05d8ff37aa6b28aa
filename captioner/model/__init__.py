"""The captioning model as pure nn.Modules: attention (soft; hard_attention: one region per
word), decoder, encoder + decoder."""
