"""DGInStyle-style diffusion generation: RCS crop jobs, the MRLF sampler, shards, the demo generator."""
