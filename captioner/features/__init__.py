"""Images -> region features: the CNN encoders and the feature cache."""
