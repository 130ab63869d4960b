"""Image and scene synthesis: GIRAFFE (compositional generative neural feature fields, book ch. 7) and
SynSin (single-image view synthesis, book ch. 9). Import the submodules directly
(``lib3d.synthesis.giraffe``, ``lib3d.synthesis.synsin``)."""
