"""layerbound: layer-by-layer lower bounds on the adversarial loss of neural network features."""

__version__ = "0.1.0"
