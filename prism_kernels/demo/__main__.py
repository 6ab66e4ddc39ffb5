"""python -m prism_kernels.demo (placeholder until the G-Vendi ladder lands): the grid-density demo."""

from prism_kernels.demo.grid import main

main()
