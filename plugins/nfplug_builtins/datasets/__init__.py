"""Built-in dataset formats: Blender synthetic, nerfstudio / instant-ngp, COLMAP, LLFF."""
