"""Base config: VGG-att3-concat-pc (the reference preset) on CIFAR-100.

Every experiment config imports this one and overrides a few fields. Run it with

    ltpa-train --config=configs/default.py --workdir=/tmp/ltpa/default

Any field can be overridden from the command line, e.g. `--config.batch_size=256` or
`--config.model.compatibility=dp`.
"""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
    """The model section, shared by every config."""
    m = ml_collections.ConfigDict()
    # The source whose architecture and initialisation the network replicates: "reference"
    # (SaoYan/LearnToPayAttention, PyTorch: raw g_a, no dropout, Xavier-uniform gain sqrt(2),
    # BN gamma ~ U(0, 1)) or "official" (saumya-jetley/cd_ICLR18_LearnToPayAttention, Lua:
    # dropout in the convs and on each descriptor, BN eps 1e-3, He-normal init). See README.
    m.preset = "reference"
    # "vgg": the paper's VGG; "resnet": pre-activation ResNet (RN-att2); "agcnn": AG-CNN hard
    # attention by cropping; "ram": the recurrent attention model (their fields below).
    m.backbone = "vgg"
    m.depth = 164  # resnet only: 9n + 2 layers, n bottlenecks per stage (164 = ResNet-164).
    m.num_classes = 100  # Classifier outputs; must equal the dataset's number of classes.
    m.width = 1.0  # Channel multiplier (1.0 = the paper's widths); < 1 for fast tests and demos.
    m.num_taps = 3  # Attention taps: 0 = plain VGG, 1/2/3 = att1/att2/att3 (the last n of L1-L3).
    m.compatibility = "pc"  # "pc": <u, l + g> (parametrised) or "dp": <l, g> (dot product).
    m.normalization = "softmax"  # "softmax" over space (maps sum to 1) or element-wise "sigmoid".
    m.tap_position = "before"  # Tap L1-L3 "before" (paper) or "after" the max-pool that follows.
    m.projection = (
        "up"  # Width mismatch of L1 vs g: "up" (1x1 conv L1 -> 512) or "down" (g -> 256).
    )
    m.head = (
        "concat"  # "concat": one classifier on all g_a; "indep": one per g_a, summed (official).
    )
    m.batch_norm = True  # Batch norm after every conv (the paper's networks use it).
    # "xla", "matmul" (im2col), "winograd" (fastest on CPU), "auto" (winograd on CPU only).
    m.conv_impl = "auto"
    # Squeeze-and-excitation (ltpa_jax/models/se.py): 0 = off, else the reduction ratio r of an
    # SE block after each layer of the VGG's five stages / in every ResNet bottleneck (paper: 16).
    m.squeeze_excitation = 0
    # Local self-attention (ltpa_jax/models/local_attention.py): 0 = off, else the k x k extent
    # of the layers that replace the VGG's stage-5 convs / the ResNet's stage-3 3x3 convs.
    m.self_attention_kernel = 0
    m.self_attention_heads = 8  # Heads of those layers (channels must be a multiple of 2x this).
    # AG-CNN, backbone "agcnn" (ltpa_jax/models/agcnn.py): global branch, crop, local branch.
    m.agcnn_threshold = 0.7  # Heat-map threshold in [0, 1) of the crop mask (the paper: 0.7).
    m.agcnn_crop_size = 0  # Side of the resized crop (a multiple of 4); 0 = the input's side.
    # RAM, backbone "ram" (ltpa_jax/models/ram.py): the recurrent attention model.
    m.ram_num_glimpses = 6  # Glimpses per image (the first at the centre).
    m.ram_glimpse_size = 8  # Side of the foveal patch and of each pooled patch, in pixels.
    m.ram_num_scales = 3  # Patches of the retina: sides glimpse_size x 1, 2, 4, ...
    m.ram_hidden_size = 256  # Width of the core LSTM (and of the glimpse embedding).
    m.ram_location_std = 0.1  # Std of the Gaussian location policy, in [-1, 1] image units.
    return m


def get_config() -> ml_collections.ConfigDict:
    """Returns the base config (CIFAR-100, VGG-att3-concat-pc, reference recipe)."""
    c = ml_collections.ConfigDict()

    # Data.
    # cifar100 | cifar10 | svhn_cropped | caltech_birds2011 | cluttered_digits | stl10 |
    # caltech101 | image_folder (the folder config.image_folder, see below).
    c.dataset = "cifar100"
    c.data_dir = ""  # TFDS data_dir ("" = TFDS default, ~/tensorflow_datasets).
    c.manual_dir = ""  # TFDS manual_dir for datasets prepared by hand (CUB, see README).
    c.image_size = 32  # Side of the square model input; a multiple of 32.
    c.augment = (
        True  # Training augmentation: crop with padding + flip (CIFAR), resize-crop-flip (CUB).
    )
    c.crop_padding = 4  # Pixels of padding before the random crop (32x32 datasets).
    c.crop_padding_mode = "constant"  # Crop padding: "constant" (zeros) or "reflect".
    # tf.data shuffle buffer (examples) of CUB and the digits; CIFAR/SVHN take a permutation of
    # the whole split per epoch from data.augment instead (the same on both input paths).
    c.shuffle_buffer = 50_000
    # Batches made on the accelerator from the split held there (data.device): "auto" (on for
    # CIFAR-10/100 and SVHN at 32x32, STL-10 at 96x96, when the split fits), "on" (fail if it
    # cannot), "off" (host tf.data). Both paths give the same batches.
    c.input_on_device = "auto"
    c.input_on_device_max_fraction = 0.25  # Share of one device's memory the split may take.
    c.num_digits_train = 10_000  # cluttered_digits only: training images generated.
    c.num_digits_test = 2_000  # cluttered_digits only: test images generated.
    # image_folder only: a folder with one sub-folder of images per class (README, "Image folders").
    c.image_folder = ""  # The folder; its train/ and test/ sub-folders, or split by the fraction.
    # 0: the folder holds train/ and test/, each with the same class sub-folders. In (0, 1]:
    # the class sub-folders are in the folder itself and this fraction of each class is the
    # test split (fixed, seeded; 1: every image is a test image, for scoring only).
    c.image_folder_test_fraction = 0.0
    # Optional folder of foreground masks laid out as config.image_folder, one per image with
    # the same relative name (any image suffix): scored by `ltpa-analyze localization`.
    c.image_folder_masks = ""

    # Model.
    c.model = get_model_config()

    # Optimisation (reference recipe: SGD m 0.9, lr 0.1 halved every 25 epochs, wd 5e-4).
    c.batch_size = 128  # Global batch size, split over all devices.
    c.eval_batch_size = 256  # Global evaluation batch size.
    c.num_epochs = 300  # Length of training in epochs (each of passes_per_epoch passes).
    # Passes over the training split in one schedule "epoch": num_epochs, the lr decays and the
    # warm-up count these epochs. The reference's 300 "epochs" are 3 augmented passes each.
    c.passes_per_epoch = 1
    c.num_train_steps = -1  # If > 0, train this many steps instead (for smoke tests and demos).
    c.learning_rate = 0.1  # Initial learning rate.
    c.lr_decay_factor = 0.5  # Multiply the learning rate by this at each decay.
    c.lr_decay_every_epochs = 25  # Decay every n epochs (used when lr_decay_at_epochs is empty).
    c.lr_decay_at_epochs = ()  # Decay epochs (may be fractional), e.g. (60, 120, 160); overrides.
    # One factor per lr_decay_at_epochs entry (e.g. (2, 2, 0.5, ...): the official CUB run raises
    # the rate, then lowers it); () = lr_decay_factor at each decay.
    c.lr_decay_factors = ()
    c.warmup_epochs = 0.0  # Linear warm-up from 0 over this many epochs.
    c.momentum = 0.9  # SGD momentum.
    c.nesterov = False  # Nesterov momentum.
    # Zero the SGD momentum buffer at each learning-rate decay (the official ResNet's
    # train_attenunit_2levels.lua builds a new optimiser state at each drop).
    c.reset_momentum_at_decay = False
    c.weight_decay = 5e-4  # L2 weight decay added to the gradient (as torch.optim.SGD does).
    c.half_precision = False  # bfloat16 compute everywhere (parameters and optimizer state f32).
    c.half_precision_on_accelerators = True  # bfloat16 compute on GPU/TPU; the CPU keeps f32.
    c.remat = "none"  # Recompute blocks in the backward pass: "none", "full" or "keep_conv".
    # Train steps per jitted call (one lax.scan; device input only; the log, eval and checkpoint
    # intervals must be multiples). 10 trained 21% faster on an H100; keep 1 on the CPU.
    c.steps_per_dispatch = 1
    c.seed = 0  # Seeds parameter init, data order and augmentation: same seed, same run.

    # Logging, evaluation, checkpoints.
    c.log_every_steps = 100  # Train metrics to TensorBoard/console every n steps.
    c.eval_every_steps = 2_000  # Evaluate on the test split every n steps (and at the end).
    c.checkpoint_every_steps = 2_000  # Save every n steps, at the end, after a fresh step 1.
    c.keep_checkpoints = 3  # Keep the last n checkpoints.
    c.keep_best_checkpoints = 1  # Also keep the n with the best eval accuracy (0: none).
    # Write checkpoints in the background while training goes on (False: each save blocks).
    c.async_checkpoints = True
    c.num_picture_images = 16  # Test images in the attention picture of each evaluation (0: none).
    c.init_from = ""  # Workdir or checkpoint dir of another run to initialise parameters from.
    return c
