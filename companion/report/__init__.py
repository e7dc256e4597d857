"""companion report: the spec's performance analysis, measured on this machine.

`measure` runs the bench suites at a budget's size, `tables` sets their figures beside the
spec's, `plots` draws the four figures, `render` writes report.html, report.md and report.json.
"""
