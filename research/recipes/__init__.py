"""Model-family recipes: what builds, loads, counts and evaluates one run of a family (the
decoder-only language model, the DDPM U-Net), so that an experiment file only says what was run."""
