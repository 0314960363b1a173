"""Where models come from: the shipped model, the zoo, the Hub, URLs and local files.

`checkpoint.py` opens and checks checkpoint files (and is the one writer), `layouts.py` renames
foreign key layouts to the official one, `zoo.py` holds the model zoo as data, `download.py`
fetches files under the public-mode rules.
"""
