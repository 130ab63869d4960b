"""lib3d.nn: shared networks (work in progress; see the submodules)."""

from lib3d.nn.weights import (
    WeightFileError,
    check_state_dict,
    load_alexnet,
    load_inception,
    load_resnet,
    load_vgg,
    read_weight_file,
    remap_keys,
    state_dict_from,
    strict_load,
)
