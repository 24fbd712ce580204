"""progressive: how convolutional networks learn scale-dependent features."""
