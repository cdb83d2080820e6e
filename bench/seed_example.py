"""The Ignite + W&B example this project grew from (../shared/seeds/003_27c81cd5fb2e33fd.txt), as written.

Changed only to run here: Fashion-MNIST instead of MNIST (MNIST cannot be downloaded here; the files are staged
from Debian's package into --root), `WandBLogger(mode="offline")`, `--root`, and one `BENCH` line per epoch with the
validation accuracy and the wall time (for the time-to-accuracy benchmark). Its "validation" set is the test set.
"""
import json
import time
from argparse import ArgumentParser

START = time.time()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer  # noqa: E402
from ignite.handlers.wandb_logger import WandBLogger  # noqa: E402
from ignite.metrics import Accuracy, Loss  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim import SGD  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision.datasets import FashionMNIST  # noqa: E402
from torchvision.transforms import Compose, Normalize, ToTensor  # noqa: E402
from tqdm import tqdm  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=-1)


def get_data_loaders(train_batch_size, val_batch_size, root):
    data_transform = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])
    train_loader = DataLoader(FashionMNIST(download=False, root=root, transform=data_transform, train=True),
                              batch_size=train_batch_size, shuffle=True)
    val_loader = DataLoader(FashionMNIST(download=False, root=root, transform=data_transform, train=False),
                            batch_size=val_batch_size, shuffle=False)
    return train_loader, val_loader


def run(train_batch_size, val_batch_size, epochs, lr, momentum, log_interval, root):
    train_loader, val_loader = get_data_loaders(train_batch_size, val_batch_size, root)
    model = Net()
    device = "cpu"
    if torch.cuda.is_available():
        device = "cuda"
    optimizer = SGD(model.parameters(), lr=lr, momentum=momentum)
    trainer = create_supervised_trainer(model, optimizer, F.nll_loss, device=device)
    evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "nll": Loss(F.nll_loss)},
                                            device=device)
    desc = "ITERATION - loss: {:.2f}"
    pbar = tqdm(initial=0, leave=False, total=len(train_loader), desc=desc.format(0))
    wandb_logger = WandBLogger(project="pytorch-ignite-integration", name="cnn-mnist", mode="offline",
                               config={"max_epochs": epochs, "batch_size": train_batch_size},
                               tags=["pytorch-ignite", "mninst"])
    wandb_logger.attach_output_handler(trainer, event_name=Events.ITERATION_COMPLETED, tag="training",
                                       output_transform=lambda loss: {"loss": loss})
    wandb_logger.attach_output_handler(evaluator, event_name=Events.EPOCH_COMPLETED, tag="training",
                                       metric_names=["nll", "accuracy"],
                                       global_step_transform=lambda *_: trainer.state.iteration)
    wandb_logger.attach_opt_params_handler(trainer, event_name=Events.ITERATION_STARTED, optimizer=optimizer,
                                           param_name="lr")
    wandb_logger.watch(model)

    @trainer.on(Events.ITERATION_COMPLETED(every=log_interval))
    def log_training_loss(engine):
        pbar.desc = desc.format(engine.state.output)
        pbar.update(log_interval)

    @trainer.on(Events.EPOCH_COMPLETED)
    def log_training_results(engine):
        pbar.refresh()
        evaluator.run(train_loader)
        metrics = evaluator.state.metrics
        tqdm.write("Training Results - Epoch: {}  Avg accuracy: {:.2f} Avg loss: {:.2f}"
                   .format(engine.state.epoch, metrics["accuracy"], metrics["nll"]))

    @trainer.on(Events.EPOCH_COMPLETED)
    def log_validation_results(engine):
        evaluator.run(val_loader)
        metrics = evaluator.state.metrics
        tqdm.write("Validation Results - Epoch: {}  Avg accuracy: {:.2f} Avg loss: {:.2f}"
                   .format(engine.state.epoch, metrics["accuracy"], metrics["nll"]))
        print("BENCH " + json.dumps({"epoch": engine.state.epoch, "test_accuracy": metrics["accuracy"],
                                     "seconds_since_start": time.time() - START}), flush=True)
        pbar.n = pbar.last_print_n = 0

    trainer.run(train_loader, max_epochs=epochs)
    pbar.close()
    wandb_logger.close()


if __name__ == "__main__":
    parser = ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--val_batch_size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.5)
    parser.add_argument("--log_interval", type=int, default=10)
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    run(args.batch_size, args.val_batch_size, args.epochs, args.lr, args.momentum, args.log_interval, args.root)
