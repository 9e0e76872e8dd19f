"""CUB-200-2011 at 224x224, AG-CNN hard attention by cropping: OURS, no published number.

Not a replication: the paper did not train AG-CNN, and this is not Guan et al. 2018's
DenseNet-121 AG-CNN (our branches are the small conv-BN-ReLU stacks of
ltpa_jax/models/agcnn.py, 64/128/256 channels, trained from scratch). Fine-grained birds are
where a crop should help: the global branch's heat map (input/4, 56x56), thresholded at 0.7,
gives the box of its largest region; the crop, zoomed to 224x224, goes to the local branch; the
fusion branch classifies both. The schedule is our 224x224 CUB variant's
(cub_vgg_att3_concat_pc.py: batch 32, rate 0.1 halved every 25 epochs, 320 epochs).

    ltpa-train --config=configs/cub_agcnn.py --workdir=$HOME/ltpa/cub_agcnn
    ltpa-analyze localization --workdir=$HOME/ltpa/cub_agcnn     # heat map vs boxes and masks

CUB must be prepared first (README, "CUB-200-2011 by hand").
"""

from ltpa_jax.configs import sibling

cub = sibling(__file__, "cub_vgg_att3_concat_pc")


def get_config():
    """Returns the config described in the module docstring."""
    c = cub.get_config()
    c.model.backbone = "agcnn"
    c.model.agcnn_threshold = 0.7
    c.model.agcnn_crop_size = 224
    return c
