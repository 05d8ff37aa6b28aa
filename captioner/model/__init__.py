"""The captioning model as pure nn.Modules: attention, decoder, encoder + decoder."""
