"""Where models come from: the shipped model, the zoo, the Hub, URLs and local files.

`source.py` parses what people type into one typed `Source`, `loader.py` is the one dispatch from a
source to the code that loads it, `checkpoint.py` opens and checks checkpoint files (and is the one
writer), `layouts.py` renames foreign key layouts to the official one, `zoo.py` holds the model zoo
as data, `download.py` fetches files under the public-mode rules. Importing this package imports
nothing (so `Source` parses without torch).
"""
