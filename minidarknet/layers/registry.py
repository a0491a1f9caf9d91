"""Section name -> layer class, with Darknet's aliases.  A layer module registers itself:

    @register("maxpool", "max")
    class MaxPool(Layer): ...

and `minidarknet.layers` imports every module in the package, so a new layer is one new file.
"""
LAYER_TYPES = {}

# Darknet section types that minidarknet knows of but does not run (yet): reported by name.
NOT_SUPPORTED = {
    "conv_lstm": "AlexeyAB recurrent layer",
    "history": "AlexeyAB recurrent helper", "iseg": "pjreddie instance-segmentation head",
}


def register(*names):
    def add(cls):
        for name in names:
            if name in LAYER_TYPES:
                raise RuntimeError(f"section [{name}] registered twice")
            LAYER_TYPES[name] = cls
        cls.section_names = names
        return cls
    return add


def layer_class(section):
    cls = LAYER_TYPES.get(section.type)
    if cls is not None:
        return cls
    if section.type in NOT_SUPPORTED:
        raise section.error(f"{section.header} ({NOT_SUPPORTED[section.type]}) is not supported "
                            f"by minidarknet")
    raise section.error(f"unknown section type {section.header}")
