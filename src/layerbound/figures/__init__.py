"""The figures and the report's layer summary: `style` (colors, labels, sizes), `layers` (the loss
curves by layer), `collisions`, `fab` (Figure 5), `semirobust` (paper 003's Figures 1-2), `report`."""
