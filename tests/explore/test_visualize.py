import numpy as np
import pytest

from dino_demo.explore.draw import figures as fig
from dino_demo.explore.draw import pixels as vis
from dino_demo.explore.draw.data import splat

RED, GREEN, WHITE = (255, 0, 0), (0, 255, 0), (255, 255, 255)


def _black(h=100, w=120):
    return np.zeros((h, w, 3), np.uint8)


def test_box_outline_lands_on_its_pixels():
    image = _black()
    out = vis.draw_boxes(image, np.array([[10, 20, 60, 80]]), [RED], widths=[2])
    for x, y in [(10, 50), (11, 50), (60, 50), (59, 50), (35, 20), (35, 21), (35, 80), (35, 79)]:
        assert tuple(out[y, x]) == RED, (x, y)
    for x, y in [(9, 50), (12, 50), (35, 50), (61, 50), (35, 19), (35, 81), (58, 50)]:
        assert tuple(out[y, x]) == (0, 0, 0), (x, y)
    assert not image.any(), "the input must not be modified"


def test_box_opacity_blends_with_the_image():
    out = vis.draw_boxes(_black(), np.array([[10, 10, 50, 50]]), [RED], widths=[1], alphas=[0.5])
    assert abs(int(out[30, 10, 0]) - 128) <= 1 and out[30, 10, 1] == 0


def test_boxes_given_in_any_corner_order_and_non_finite_ones_are_skipped():
    out = vis.draw_boxes(_black(), np.array([[60, 80, 10, 20], [np.nan, 0, 5, 5]]), [RED, GREEN], widths=[1, 1])
    assert tuple(out[50, 10]) == RED and not (out[..., 1] > 0).any()


def test_captions_are_drawn_above_the_box():
    out = vis.draw_boxes(_black(200, 200), np.array([[50, 100, 150, 180]]), [GREEN], captions=["cat 0.91"])
    tag = out[70:100, 50:150]
    background = (tag == GREEN).all(-1)
    assert background.sum() > 100
    ink = background == 0
    ink[:, :] &= background.any(1, keepdims=True)  # rows of the tag only
    assert ink[:, :40].sum() > 10  # the text, starting at the box's left edge
    assert not out[105:175, 60:140].any()  # nothing inside the box


def test_point_style_follows_weights():
    radii, alphas = vis.point_style(np.array([0.0, 0.25, 1.0, 0.5]), min_radius=2, max_radius=10)
    np.testing.assert_allclose(radii, [2, 4, 10, 6])
    np.testing.assert_allclose(alphas, [0.25, 0.4375, 1.0, 0.625])
    radii, _ = vis.point_style(np.zeros(3), min_radius=2, max_radius=10)
    np.testing.assert_allclose(radii, [2, 2, 2])


def test_point_sizes_follow_weights_on_the_image():
    points = np.array([[20, 50], [60, 50], [100, 50]])
    radii, _ = vis.point_style(np.array([0.1, 0.5, 1.0]), min_radius=1, max_radius=12)
    out = vis.draw_points(_black(), points, [GREEN] * 3, radii)
    areas = [(out[30:70, x - 19:x + 19, 1] > 128).sum() for x, _ in points]
    assert areas[0] < areas[1] < areas[2]
    for area, r in zip(areas, radii):
        assert area == pytest.approx(np.pi * (r + 0.5) ** 2, rel=0.3)
    assert tuple(out[50, 100]) == GREEN


def test_points_are_anti_aliased_and_centred_where_they_belong():
    out = vis.draw_points(_black(), np.array([[60.0, 50.0]]), [GREEN], [8.0])
    green = out[..., 1].astype(int)
    rows, cols = np.nonzero(green)
    assert (cols.min() + cols.max() + 1) / 2 == pytest.approx(60, abs=0.5)  # pixel i covers [i, i + 1)
    assert (rows.min() + rows.max() + 1) / 2 == pytest.approx(50, abs=0.5)
    edge = green[(green > 0) & (green < 255)]
    assert edge.size >= 8  # partly covered pixels along the rim


def test_a_faint_point_still_shows_its_ring():
    out = vis.draw_points(_black(), np.array([[60.0, 50.0]]), [GREEN], [10.0], alphas=[0.1])
    assert out[50, 60, 1] <= 30  # the faint fill
    assert out[50, 50:71, 1].max() >= 150  # the ring, much stronger


def test_coincident_points_of_different_colours_all_show():
    points = np.array([[60.0, 50.0], [60.0, 50.0], [60.2, 50.1]])
    out = vis.draw_points(_black(), points, [RED, GREEN, (0, 0, 255)], [12.0, 12.0, 12.0])
    disc = out[38:62, 48:72].reshape(-1, 3)
    for channel in range(3):  # each colour owns a sector of the disc
        pure = (disc[:, channel] > 200) & (np.delete(disc, channel, axis=1) < 40).all(1)
        assert pure.sum() > 50, channel
    assert vis.coincident_groups(points, 1.0).tolist() == [0, 0, 0]


def test_labels_never_overlap_and_the_first_gets_the_best_place():
    boxes = np.array([[50, 100, 120, 160], [52, 102, 110, 150], [54, 98, 130, 170], [200, 20, 260, 60]], float)
    sizes = [(70, 16)] * 4
    spots = vis.place_labels(boxes, sizes, (300, 200))
    assert spots[0] == (50, 84, 120, 100)  # just above its box's top-left corner
    for i in range(4):
        for j in range(i):
            a, b = spots[i], spots[j]
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (i, j)
        assert 0 <= spots[i][0] and spots[i][2] <= 300 and 0 <= spots[i][1] and spots[i][3] <= 200


def test_a_weaker_caption_does_not_cover_a_stronger_one():
    """Two detections with the same top-left corner (a near duplicate inside a stronger one)."""
    boxes = np.array([[60, 80, 140, 150], [62, 84, 120, 140]], float)
    out = fig.render_detections(np.zeros((200, 200, 3), np.uint8), boxes, ["ellipse 0.47", "ring 0.36"], [7, 4])
    strong, weak = vis.palette_color(7), vis.palette_color(4)
    above = out[60:80, 60:160]  # just above the boxes: the best place, the stronger caption's
    assert (above == strong).all(-1).sum() > 400 and not (above == weak).all(-1).any()
    assert (out[84:110, 62:160] == weak).all(-1).sum() > 400  # the weaker one inside its box, below


def test_the_legend_goes_below_the_picture():
    image = np.full((100, 120, 3), 7, np.uint8)
    out = vis.with_legend(image, vis.Legend(swatches=((RED, "level 1"), (GREEN, "level 2")), note="a note"))
    assert out.shape[0] > 100 and out.shape[1] == 120
    np.testing.assert_array_equal(out[:100], image)
    key = out[100:]
    assert ((key == RED).all(-1)).sum() > 20 and ((key == GREEN).all(-1)).sum() > 20


def test_splat_spreads_a_weight_over_the_four_cells_the_op_reads():
    # (x, y) = (0.3, 0.5) on a 4 x 5 grid: x * 5 - 0.5 = 1.0 (column 1 exactly), y * 4 - 0.5 = 1.5.
    grid = splat(np.array([[0.3, 0.5]]), np.array([2.0]), (4, 5))
    expected = np.zeros((4, 5))
    expected[1, 1] = expected[2, 1] = 1.0
    np.testing.assert_allclose(grid, expected, atol=1e-12)
    grid = splat(np.array([[0.35, 0.55]]), np.array([1.0]), (4, 5))
    # x * 5 - 0.5 = 1.25, y * 4 - 0.5 = 1.7: columns 1 and 2 share 0.75 / 0.25, rows 1 and 2 share 0.3 / 0.7.
    np.testing.assert_allclose(grid[1:3, 1:3], [[0.3 * 0.75, 0.3 * 0.25], [0.7 * 0.75, 0.7 * 0.25]], atol=1e-12)
    assert grid.sum() == pytest.approx(1.0)
    edge = splat(np.array([[0.0, 0.5], [2.0, 2.0]]), np.array([1.0, 5.0]), (4, 5))  # half, then all, outside
    assert edge.sum() == pytest.approx(0.5)


def test_heatmap_cells_land_on_their_pixels():
    grid = np.zeros((4, 5))
    grid[2, 3] = 1.0  # cell (row 2, col 3): pixels x 72..96, y 50..75 with 24 x 25 px cells
    out = fig.render_heatmaps(np.zeros((100, 120, 3), np.uint8), [grid], [(24.0, 25.0)], ["level 1"])
    hot = out[:100, :, :].astype(int).sum(-1) > 200
    rows, cols = np.nonzero(hot[30:])  # below the title band
    assert cols.min() == 72 and cols.max() == 95
    assert rows.min() + 30 == 50 and rows.max() + 30 == 74


def test_zoom_keeps_the_box_and_the_main_points_in_frame():
    window = vis.zoom_window(np.array([40, 40, 60, 60]), np.array([[30, 50], [70, 55]]), (200, 300))
    x0, y0, x1, y1 = window
    assert x0 <= 30 and x1 >= 70 and y0 <= 40 and y1 >= 60
    assert (x1 - x0) / (y1 - y0) == pytest.approx(1.5, rel=0.05)
    main = vis.main_points(np.array([[0, 0], [10, 10], [20, 20]]), np.array([0.7, 0.25, 0.05]), 0.8)
    assert main.tolist() == [[0, 0], [10, 10]]
    capped = vis.zoom_window(np.array([0, 0, 300, 200]), np.zeros((0, 2)), (200, 300), max_fraction=0.5)
    assert capped[2] - capped[0] <= 150 and capped[3] - capped[1] <= 100


def test_zoomed_sampling_view_puts_the_points_at_their_enlarged_places():
    image = np.full((200, 200, 3), 128, np.uint8)
    points = np.array([[[[90.0, 100.0]], [[110.0, 100.0]]]])
    weights = np.array([[[1.0], [1.0]]])
    out = fig.render_sampling(image, np.array([95, 95, 105, 105]), points, weights, heads=[0], levels=[0, 1],
                              zoom=True)
    window = vis.zoom_window(np.array([95, 95, 105, 105]), vis.main_points(points.reshape(-1, 2), weights, 0.5),
                             (200, 200), max_fraction=0.5)
    k = 200 / (window[2] - window[0])
    x, y = (90 - window[0]) * k, (100 - window[1]) * k
    assert tuple(out[int(y), int(x)]) == vis.palette_color(0)


def test_layer_grid_has_a_panel_per_layer():
    image = np.full((120, 160, 3), 90, np.uint8)
    panel = fig.LayerPanel(reference_box=np.array([40, 30, 100, 90.0]), points=np.full((2, 2, 1, 2), 70.0),
                           weights=np.full((2, 2, 1), 0.25), box=np.array([45, 35, 95, 85.0]), title="layer 1")
    one = fig.render_layer_grid(image, [panel], panel_side=200)
    three = fig.render_layer_grid(image, [panel] * 3, columns=3, panel_side=200)
    assert three.shape[1] > 2.9 * one.shape[1]


def test_colormap_ends_and_palette():
    dark, light = vis.colormap(np.array([0.0, 1.0]))
    assert dark == (68, 1, 84) and light == (253, 231, 37)
    assert vis.colormap(np.array([-3.0, 7.0])) == [dark, light]
    assert vis.palette_color(0) == vis.palette_color(len(vis.PALETTE))


def test_render_detections_highlights_the_selection():
    boxes = np.array([[10, 10, 50, 50], [60, 20, 110, 90]])
    out = fig.render_detections(_black(), boxes, ["a 0.9", "b 0.8"], [1, 2], selected=1)
    width = vis.line_width((100, 120))
    assert tuple(out[60, 60 + 2 * width - 1]) == vis.palette_color(2)  # thick selected outline
    faded = out[30, 10]
    assert 0 < faded.max() < 255 and faded.argmax() == np.argmax(vis.palette_color(1))


def test_render_proposals_marks_final_detections_and_colours_by_level():
    boxes = np.array([[10, 10, 40, 40], [60, 60, 110, 95]])
    out = fig.render_proposals(_black(), boxes, np.array([0.2, 0.9]), np.array([0, 3]),
                               np.array([False, True]), color_by="level")
    width = vis.line_width((100, 120))
    plain = out[25, 10]  # thin and translucent on the black image
    assert 0 < plain.max() < 255 and plain.argmax() == np.argmax(vis.palette_color(0))
    assert tuple(out[80, 60]) == tuple(out[80, 60 + width - 1]) == vis.palette_color(3)
    assert tuple(out[80, 60 - 1]) == tuple(out[80, 60 - width]) == WHITE  # halo just outside
    with pytest.raises(ValueError):
        fig.render_proposals(_black(), boxes, np.zeros(2), np.zeros(2), np.zeros(2, bool), color_by="x")


def test_render_sampling_colours_points_by_level_or_head():
    image = np.full((200, 200, 3), 128, np.uint8)
    points = np.array([[[[40.0, 150.0]], [[160.0, 150.0]]]])  # 1 head, 2 levels, 1 point
    weights = np.array([[[1.0], [1.0]]])
    out = fig.render_sampling(image, np.array([20, 20, 180, 100]), points, weights, heads=[4], levels=[0, 2])
    assert tuple(out[150, 40]) == vis.palette_color(0)
    assert tuple(out[150, 160]) == vis.palette_color(2)
    assert tuple(out[60, 20]) == WHITE  # the reference box
    by_head = fig.render_sampling(image, np.array([20, 20, 180, 100]), points, weights, heads=[4], levels=[0, 2],
                                  color_by="head")
    assert tuple(by_head[150, 40]) == tuple(by_head[150, 160]) == vis.palette_color(4)


def test_render_refinement_goes_from_dark_to_yellow():
    boxes = np.array([[10, 10, 60, 60], [20, 20, 80, 70], [30, 30, 100, 90]], dtype=float)
    out = fig.render_refinement(_black(), boxes)
    assert tuple(out[75, 100]) == (253, 231, 37)
    assert out.shape[1] == 120 and out.shape[0] > 100  # the key below the picture
