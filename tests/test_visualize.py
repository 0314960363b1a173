import numpy as np
import pytest

from dino_demo.explore import visualize as vis

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


def test_colormap_ends_and_palette():
    dark, light = vis.colormap(np.array([0.0, 1.0]))
    assert dark == (68, 1, 84) and light == (253, 231, 37)
    assert vis.colormap(np.array([-3.0, 7.0])) == [dark, light]
    assert vis.palette_color(0) == vis.palette_color(len(vis.PALETTE))


def test_render_detections_highlights_the_selection():
    boxes = np.array([[10, 10, 50, 50], [60, 20, 110, 90]])
    out = vis.render_detections(_black(), boxes, ["a 0.9", "b 0.8"], [1, 2], selected=1)
    width = vis.line_width((100, 120))
    assert tuple(out[60, 60 + 2 * width - 1]) == vis.palette_color(2)  # thick selected outline
    faded = out[30, 10]
    assert 0 < faded.max() < 255 and faded.argmax() == np.argmax(vis.palette_color(1))


def test_render_proposals_marks_final_detections_and_colours_by_level():
    boxes = np.array([[10, 10, 40, 40], [60, 60, 110, 95]])
    out = vis.render_proposals(_black(), boxes, np.array([0.2, 0.9]), np.array([0, 3]),
                               np.array([False, True]), color_by="level")
    width = vis.line_width((100, 120))
    plain = out[25, 10]  # thin and translucent on the black image
    assert 0 < plain.max() < 255 and plain.argmax() == np.argmax(vis.palette_color(0))
    assert tuple(out[80, 60]) == tuple(out[80, 60 + width - 1]) == vis.palette_color(3)
    assert tuple(out[80, 60 - 1]) == tuple(out[80, 60 - width]) == WHITE  # halo just outside
    with pytest.raises(ValueError):
        vis.render_proposals(_black(), boxes, np.zeros(2), np.zeros(2), np.zeros(2, bool), color_by="x")


def test_render_sampling_colours_points_by_level_or_head():
    image = np.full((200, 200, 3), 128, np.uint8)
    points = np.array([[[[40.0, 150.0]], [[160.0, 150.0]]]])  # 1 head, 2 levels, 1 point
    weights = np.array([[[1.0], [1.0]]])
    out = vis.render_sampling(image, np.array([20, 20, 180, 100]), points, weights, heads=[4], levels=[0, 2])
    assert tuple(out[150, 40]) == vis.palette_color(0)
    assert tuple(out[150, 160]) == vis.palette_color(2)
    assert tuple(out[60, 20]) == WHITE  # the reference box
    by_head = vis.render_sampling(image, np.array([20, 20, 180, 100]), points, weights, heads=[4], levels=[0, 2],
                                  color_by="head")
    assert tuple(by_head[150, 40]) == tuple(by_head[150, 160]) == vis.palette_color(4)


def test_render_refinement_goes_from_dark_to_yellow():
    boxes = np.array([[10, 10, 60, 60], [20, 20, 80, 70], [30, 30, 100, 90]], dtype=float)
    out = vis.render_refinement(_black(), boxes)
    assert tuple(out[75, 100]) == (253, 231, 37)
    assert out.shape == (100, 120, 3)
