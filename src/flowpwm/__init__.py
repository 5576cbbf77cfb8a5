"""flowpwm: PWM with an MLP or a flow-matching latent world model."""

__version__ = "0.1.0"
