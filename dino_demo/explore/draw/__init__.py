"""Drawing a stored result, in three layers, each using only the ones before it:

    data.py     result -> pixel-space numpy arrays (boxes, points, weights, heat maps), no drawing
    pixels.py   drawing primitives on [H, W, 3] uint8 arrays (boxes, points, text, legends)
    figures.py  the explorer's figures: data drawn with the primitives

Above them, `explore.selection`, `explore.refinement` and `explore.denoising_figures` draw their
own topics with the same layers, and `explore.panels` gives the page's views (figures, tables,
Markdown) of one stored result. No UI framework here: the page (`dino_demo.ui`) puts panels into
components, and the command line saves figures.
"""
