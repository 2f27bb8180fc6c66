"""What the bench smoke tests share about a benchmark's chart."""


def chart_of(js):
    """The chart a run writes beside its JSON file js (the smokes name them so)."""
    return js[:-len(".json")] + ".png"


def png_ok(path):
    """Whether path holds a PNG (its signature)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False
