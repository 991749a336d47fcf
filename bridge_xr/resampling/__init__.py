"""Lazy resampling of images through the registration graph."""
