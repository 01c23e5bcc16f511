"""The built-in data sets and models by name: what a study spec may name and a search space's
`when:` may ask before any data is read or any network built. No torch here, so the spec can
be checked without loading it."""

# name -> (modality, channels)
KINDS = {
    "digits": ("image", 1),
    "circles": ("tabular", 0),
    "moons": ("tabular", 0),
    "mnist": ("image", 1),
    "fashion_mnist": ("image", 1),
    "cifar10": ("image", 3),
    "cifar100": ("image", 3),
    "svhn": ("image", 3),
    "csv": ("tabular", 0),
    "diabetes": ("tabular", 0),
    "noise": ("tabular", 0),
}
DATASETS = tuple(KINDS)

# The task of each built-in whose task is fixed (csv's follows its target column).
TASKS = {name: "classification" for name in KINDS if name != "csv"}
TASKS.update(diabetes="regression", noise="regression")

# The sets torchvision reads, with their official test splits.
TORCHVISION_SETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")

# Per-channel mean and std of their training images, the values everyone uses.
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}

# The built-in networks (trainables.models builds them) and the spec keys each takes; anything
# else is a plug-in, which gets `model.args` alone.
MODEL_KEYS = {
    "mlp": ("widths",),
    "cnn": ("widths", "channels"),
    "torchvision": ("arch", "small_input"),
}
MODELS = tuple(MODEL_KEYS)
BUILTIN_KEYS = tuple(dict.fromkeys(key for keys in MODEL_KEYS.values() for key in keys))
IMAGE_MODELS = ("cnn", "torchvision")  # convolutional: images only
