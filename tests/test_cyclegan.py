"""CycleGAN parts: the ResNet generator, the 70x70 PatchGAN, the losses, the trainer with its image pools and
learning-rate decay, paired validation, and resuming from the crash-safe training state."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.handlers import IgniteMetricHandler, LrScheduleHandler, StatsHandler, from_engine
from monai.metrics import PSNRMetric
from torch.utils.data import DataLoader

from shared.engines.cyclegan import CycleGANTrainer, ImagePool, PreparePairedBatch, linear_decay_lambda
from shared.handlers.training_state import TrainingState
from shared.losses.cyclegan import CycleGANLoss
from shared.networks.cyclegan import PatchGANDiscriminator, ResnetGenerator, init_cyclegan_weights

SIZE = 32  # tiny images and networks keep every training test to a fraction of a second


@pytest.fixture(scope="module")
def full_generator() -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator().eval()


@pytest.fixture(scope="module")
def full_discriminator() -> PatchGANDiscriminator:
    torch.manual_seed(0)
    return PatchGANDiscriminator().eval()


def tiny_networks(seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return {
        "generator_ab": ResnetGenerator(base_channels=8, num_residual_blocks=2),
        "generator_ba": ResnetGenerator(base_channels=8, num_residual_blocks=2),
        "discriminator_a": PatchGANDiscriminator(channels=8),
        "discriminator_b": PatchGANDiscriminator(channels=8),
    }


def unpaired_loader(num_images: int = 4, batch_size: int = 2) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    images = [{"A": torch.rand(3, SIZE, SIZE, generator=generator) * 2 - 1,
               "B": torch.rand(3, SIZE, SIZE, generator=generator) * 2 - 1} for _ in range(num_images)]
    return DataLoader(images, batch_size=batch_size, shuffle=False)


def cyclegan_trainer(networks: dict, max_epochs: int = 1, handlers: list | None = None,
                     loader: DataLoader | None = None, **kwargs) -> CycleGANTrainer:
    generator_optimizer = torch.optim.Adam(
        [*networks["generator_ab"].parameters(), *networks["generator_ba"].parameters()], 2e-4, betas=(0.5, 0.999))
    discriminator_optimizer = torch.optim.Adam(
        [*networks["discriminator_a"].parameters(), *networks["discriminator_b"].parameters()], 2e-4,
        betas=(0.5, 0.999))
    loader = unpaired_loader() if loader is None else loader
    return CycleGANTrainer(device="cpu", max_epochs=max_epochs, train_data_loader=loader,
                           generator_optimizer=generator_optimizer, discriminator_optimizer=discriminator_optimizer,
                           train_handlers=handlers, **networks, **kwargs)


def assert_same_state(ours, theirs, where: str = "") -> None:
    """Recursive equality of state dicts (tensors compared exactly)."""
    if torch.is_tensor(ours):
        assert torch.is_tensor(theirs) and torch.equal(ours, theirs), where
    elif isinstance(ours, dict):
        assert set(ours) == set(theirs), where
        for key in ours:
            assert_same_state(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_state(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, where


# --- networks --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [256, 512])
def test_full_size_generator_keeps_the_size_and_outputs_tanh_range(full_generator, size):
    with torch.inference_mode():
        fake = full_generator(torch.rand(1, 3, size, size) * 2 - 1)
    assert fake.shape == (1, 3, size, size)
    assert fake.min() >= -1 and fake.max() <= 1


def test_generator_layout_matches_the_paper():
    net = ResnetGenerator()
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs[:3]] == [
        (3, 64, 7, 1), (64, 128, 3, 2), (128, 256, 3, 2)]
    assert [type(m).__name__ for m in convs[-3:-1]] == ["ConvTranspose2d"] * 2
    assert (convs[-1].in_channels, convs[-1].out_channels, convs[-1].kernel_size[0]) == (64, 3, 7)
    assert sum(isinstance(m, torch.nn.ReflectionPad2d) for m in net.modules()) == 2 + 2 * 9
    assert isinstance(net.model[-1], torch.nn.Tanh)
    # the authors' 9-block generator has 11,378,179 parameters
    assert sum(p.numel() for p in net.parameters()) == 11_378_179


@pytest.mark.parametrize("shape", [(36, 52), (64, 64)])
def test_tiny_generator_keeps_sizes_divisible_by_four(shape):
    net = ResnetGenerator(in_channels=1, out_channels=2, base_channels=4, num_residual_blocks=1)
    assert net(torch.randn(2, 1, *shape)).shape == (2, 2, *shape)


@pytest.mark.parametrize("size,patches", [(256, 30), (512, 62)])
def test_full_size_discriminator_patch_map(full_discriminator, size, patches):
    with torch.inference_mode():
        scores = full_discriminator(torch.rand(1, 3, size, size))
    assert scores.shape == (1, 1, patches, patches)


def test_discriminator_is_the_70x70_patchgan():
    net = PatchGANDiscriminator()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs] == [
        (64, 4, 2), (128, 4, 2), (256, 4, 2), (512, 4, 1), (1, 4, 1)]
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules()) == 3  # none on the first layer
    assert sum(p.numel() for p in net.parameters()) == 2_764_737  # as the authors' n_layers=3 discriminator

    # Receptive field, measured: without instance norm (which mixes the whole image) and with positive weights,
    # the input gradient of one output score is non-zero exactly on the input pixels that score sees.
    probe = copy.deepcopy(net)
    for module in list(probe.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.InstanceNorm2d):
                setattr(module, name, torch.nn.Identity())
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_()
    x = torch.rand(1, 3, 256, 256, requires_grad=True)
    probe(x)[0, 0, 15, 15].backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    assert 0 < rows.min() and rows.max() < 255  # not clipped by the border


def test_weights_are_initialised_from_n_0_002():
    torch.manual_seed(0)
    weights = torch.cat([m.weight.flatten() for m in ResnetGenerator().modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(weights.mean().item()) < 1e-3 and abs(weights.std().item() - 0.02) < 1e-3
    linear = init_cyclegan_weights(torch.nn.Sequential(torch.nn.Linear(400, 400), torch.nn.BatchNorm2d(400)))
    assert abs(linear[0].weight.std().item() - 0.02) < 1e-3 and linear[0].bias.abs().max() == 0
    assert abs(linear[1].weight.mean().item() - 1) < 0.01


def test_networks_script_like_eager():
    torch.manual_seed(0)
    nets = tiny_networks()
    x = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    for name in ("generator_ab", "discriminator_a"):
        scripted = torch.jit.script(nets[name])
        assert torch.allclose(scripted(x), nets[name](x)), name


# --- losses ----------------------------------------------------------------------------------------------------
def test_losses():
    loss = CycleGANLoss()
    scores = torch.tensor([[0.0, 1.0], [2.0, 0.5]])  # least squares on the raw scores, the paper's LSGAN
    assert loss.generator_adversarial(scores, scores).item() == pytest.approx(2 * (1 + 0 + 1 + 0.25) / 4)
    assert loss.discriminator(scores, scores).item() == pytest.approx(0.5 * (1 + 0 + 1 + 0.25 + 0 + 1 + 4 + 0.25) / 4)
    a, b = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    assert loss.cycle(a, a + 0.1, b, b - 0.2).item() == pytest.approx(10 * (0.1 + 0.2))
    assert loss.identity(a, a + 0.1, b, b + 0.3).item() == pytest.approx(10 * 0.5 * (0.1 + 0.3))
    assert loss.discriminator(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == 0
    assert loss.generator_adversarial(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item() == 1
    assert loss.uses_identity and not CycleGANLoss(lambda_identity=0).uses_identity
    with pytest.raises(ValueError, match="non-negative"):
        CycleGANLoss(lambda_cycle=-1)


# --- trainer ---------------------------------------------------------------------------------------------------
def test_one_iteration_updates_all_four_networks():
    networks = tiny_networks()
    before = {name: copy.deepcopy(net.state_dict()) for name, net in networks.items()}
    trainer = cyclegan_trainer(networks, loader=unpaired_loader(num_images=2))
    generator_step: dict = {}

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def _inspect_generator_step(engine):
        discriminators = [*networks["discriminator_a"].parameters(), *networks["discriminator_b"].parameters()]
        generator_step["frozen"] = not any(p.requires_grad for p in discriminators)
        generator_step["no_grad"] = all(p.grad is None for p in discriminators)

    trainer.run()
    assert trainer.state.iteration == 1
    assert generator_step == {"frozen": True, "no_grad": True}  # no discriminator gradient from the generator step
    for name, net in networks.items():
        tensors = [k for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)]  # not the size record
        changed = [k for k in tensors if not torch.equal(net.state_dict()[k], before[name][k])]
        assert len(changed) == len(tensors), f"{name}: only {changed} changed"
        assert all(p.requires_grad for p in net.parameters()), name
    output = trainer.state.output
    assert isinstance(output, list) and len(output) == 2  # decollated, one dict an image
    for key in ("real_A", "real_B", "fake_A", "fake_B", "rec_A", "rec_B"):
        assert output[0][key].shape == (3, SIZE, SIZE), key
    losses = {k: from_engine([k], first=True)(output) for k in
              ("loss_G", "loss_G_adv", "loss_cycle", "loss_identity", "loss_D_A", "loss_D_B")}
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values()), losses
    assert losses["loss_G"] == pytest.approx(losses["loss_G_adv"] + losses["loss_cycle"] + losses["loss_identity"],
                                             rel=1e-5)
    assert losses["loss_identity"] > 0 and len(trainer.image_pool_a) == len(trainer.image_pool_b) == 2


def test_identity_loss_can_be_turned_off_and_keys_renamed():
    networks = tiny_networks()
    loader = DataLoader([{"ihc": torch.rand(3, SIZE, SIZE), "he": torch.rand(3, SIZE, SIZE)}], batch_size=1)
    trainer = cyclegan_trainer(networks, loader=loader, keys=("ihc", "he"),
                               loss_function=CycleGANLoss(lambda_identity=0), decollate=False)
    trainer.run()
    assert trainer.state.output["loss_identity"] == 0 and trainer.state.output["fake_B"].shape == (1, 3, SIZE, SIZE)


def test_amp_on_the_cpu_keeps_two_scalers():
    trainer = cyclegan_trainer(tiny_networks(), loader=unpaired_loader(num_images=2), amp=True)
    trainer.run()
    assert math.isfinite(from_engine(["loss_G"], first=True)(trainer.state.output))
    assert set(trainer.scaler.state_dict()) == {"generator", "discriminator"}


def test_image_pool_fills_then_mixes_reproducibly():
    assert ImagePool(0).query(images := torch.randn(3, 1, 2, 2)) is images

    def history(seed: int) -> tuple[list[torch.Tensor], ImagePool]:
        torch.manual_seed(seed)
        pool, returned = ImagePool(size=4), []
        for step in range(8):
            returned.append(pool.query(torch.full((2, 1, 2, 2), float(step))))
        return returned, pool

    returned, pool = history(0)
    assert len(pool) == 4
    for step in range(2):  # while filling, the input comes back
        assert torch.equal(returned[step], torch.full((2, 1, 2, 2), float(step)))
    later = [int(image[0, 0, 0]) for batch in returned[2:] for image in batch]
    steps = [step for step in range(2, 8) for _ in range(2)]
    assert any(value < step for value, step in zip(later, steps))  # some older images came back
    assert any(value == step for value, step in zip(later, steps))  # and some new ones went straight through
    assert all(value <= step for value, step in zip(later, steps))
    again, _ = history(0)
    assert all(torch.equal(x, y) for x, y in zip(returned, again))
    restored = ImagePool(size=4)
    restored.load_state_dict(pool.state_dict())
    assert_same_state(restored.state_dict(), pool.state_dict())
    with pytest.raises(ValueError, match="up to 4 images"):
        ImagePool(size=5).load_state_dict(pool.state_dict())


def test_linear_decay_lambda_follows_the_paper():
    factor = linear_decay_lambda(n_epochs=3, n_epochs_decay=2)
    assert [factor(e) for e in range(7)] == pytest.approx([1, 1, 1, 2 / 3, 1 / 3, 0, 0])
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay_lambda(100, 100))
    lrs = []
    for _ in range(200):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == lrs[99] == 2e-4 and lrs[100] == pytest.approx(2e-4 * 100 / 101)
    assert lrs[199] == pytest.approx(2e-4 / 101)


def test_paired_validation_with_supervised_evaluator():
    generator = tiny_networks()["generator_ab"]
    pairs = [{"A": torch.rand(3, SIZE, SIZE) * 2 - 1, "B": torch.rand(3, SIZE, SIZE) * 2 - 1} for _ in range(3)]
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=DataLoader(pairs, batch_size=2), network=generator,
        prepare_batch=PreparePairedBatch("A", "B"),
        key_val_metric={"val_psnr": IgniteMetricHandler(PSNRMetric(max_val=2.0),
                                                        output_transform=from_engine(["pred", "label"]))})
    evaluator.run()
    assert math.isfinite(evaluator.state.metrics["val_psnr"])
    last = evaluator.state.output[-1]
    assert torch.equal(last["image"], pairs[2]["A"]) and torch.equal(last["label"], pairs[2]["B"])
    assert last["pred"].shape == (3, SIZE, SIZE)


# --- resuming --------------------------------------------------------------------------------------------------
def resumable_run(tmp_path, seed: int, max_epochs: int, resume: str | None):
    """A trainer with everything a config would give it: networks, optimizers, LR schedules, image pools, a
    TrainingState, stats logging. Returns the trainer and the objects the state saves."""
    networks = tiny_networks(seed)
    pools = {"image_pool_a": ImagePool(size=3), "image_pool_b": ImagePool(size=3)}
    trainer = cyclegan_trainer(networks, max_epochs=max_epochs, **pools)
    schedulers = {f"{kind}_scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay_lambda(1, 2))
                  for kind, optimizer in (("generator", trainer.generator_optimizer),
                                          ("discriminator", trainer.discriminator_optimizer))}
    objects = {**networks, "generator_optimizer": trainer.generator_optimizer,
               "discriminator_optimizer": trainer.discriminator_optimizer, **schedulers, **pools}
    TrainingState(str(tmp_path / "training_state"), objects, resume=resume).attach(trainer)
    for name, scheduler in schedulers.items():
        LrScheduleHandler(scheduler, name=name, epoch_level=True).attach(trainer)
    StatsHandler(iteration_log=True, epoch_log=False, tag_name="loss_G", name="cyclegan_test",
                 output_transform=from_engine(["loss_G"], first=True)).attach(trainer)
    return trainer, objects


def test_training_state_saves_and_restores_networks_optimizers_pools(tmp_path, caplog):
    first, objects = resumable_run(tmp_path, seed=0, max_epochs=1, resume=None)
    logging.getLogger("cyclegan_test").addHandler(caplog.handler)  # StatsHandler's logger does not propagate
    first.run()
    assert first.state.iteration == 2 and first.state.epoch == 1
    assert "loss_G: " in caplog.text  # StatsHandler read the loss through from_engine
    saved = {name: copy.deepcopy(obj.state_dict()) for name, obj in objects.items()}
    assert len(saved["image_pool_a"]["images"]) == 3 and saved["generator_optimizer"]["state"]

    resumed, fresh = resumable_run(tmp_path, seed=1, max_epochs=2, resume="latest")
    with pytest.raises(AssertionError):  # fresh objects start elsewhere
        assert_same_state(fresh["generator_ab"].state_dict(), saved["generator_ab"])
    at_start: dict = {}

    @resumed.on(Events.STARTED)  # after TrainingState.load, which was attached first
    def _compare(engine):
        for name, obj in fresh.items():
            assert_same_state(obj.state_dict(), saved[name], name)
        at_start.update(iteration=engine.state.iteration, epoch=engine.state.epoch)

    iterations = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda engine: iterations.append(engine.state.iteration))
    resumed.run()
    assert at_start == {"iteration": 2, "epoch": 1}
    assert iterations == [3, 4] and resumed.state.epoch == 2
    # the decay started after epoch 1: lr 2e-4 * (1 - 1/3), then * (1 - 2/3) after epoch 2
    assert resumed.generator_optimizer.param_groups[0]["lr"] == pytest.approx(2e-4 / 3)
