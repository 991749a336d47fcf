"""Landmark registration: landmark sets, linear and thin-plate-spline models, error figures."""
