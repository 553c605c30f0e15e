"""Dataset readers, label maps, the demo world, rare-class sampling and transforms."""
