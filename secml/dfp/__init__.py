"""DFP: per-user autoencoder digital fingerprinting."""
