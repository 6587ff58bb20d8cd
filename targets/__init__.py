"""MANGO's concrete activation sources (installed as ``mango.targets``).

Every target is a callable ``target(images [k, C, H, W]) -> [k]`` float on its
model's device, batched, with ``differentiable`` and ``noisy`` flags
(:mod:`mango.protocols`).

============ ============================================ ==================================
name         what                                         images
============ ============================================ ==================================
snn-digits   embedded spiking CNN, class neuron 0 rate    [k, 1, 16, 16] in [0, 1]
cnn-digits   embedded ReLU CNN, class-0 logit             [k, 1, 16, 16] in [0, 1]
snn-cifar10  the paper's spiking CNN (path to weights),   [k, 3, 32, 32] CIFAR-normalised
             class neuron 3 rate over T=128
torch-unit   a unit of a user's torch module file         the module's input
============ ============================================ ==================================

Modules: :mod:`.units` (layer lookup, ``list_layers``, unit selection),
:mod:`.torch_unit` (hook targets for any ``nn.Module``), :mod:`.spiking`
(snnTorch targets, the reference step loop, Poisson coding), :mod:`.snn_fast`
(exact layer-by-layer-over-time evaluation), :mod:`.paper_snn`, :mod:`.digits`
(embedded models and factories), and the recipes :mod:`.train_snn`,
:mod:`.train_cnn`. Nothing is imported or loaded until used.
"""
