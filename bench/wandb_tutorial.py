"""The W&B PyTorch tutorial's pipeline (../shared/seeds/002_66254e1e9314312a.txt), as written.

Its config (epochs 5, kernels [16, 32], batch 128, Adam at lr 0.005), its `get_data` (torchvision dataset with a
per-item `ToTensor`, a `Subset` of every `slice`-th image), `make_loader` (shuffle, pin_memory, 2 workers), its
ConvNet (conv -> ReLU -> pool, NCHW), `wandb.watch(log="all", log_freq=10)`, `wandb.log` every 25 batches, the test
pass and the ONNX export with `wandb.save` at the end. Changed only to run here and to be timed: Fashion-MNIST
(MNIST cannot be downloaded here; staged into --root), `mode="offline"`, `--slice` (default 1, the whole training
set: the tutorial's fifth never reaches 0.90 on Fashion-MNIST), `--epochs`, and after each epoch the tutorial's own
test pass, printed as one `BENCH` line with the wall time since the process started (for the time-to-accuracy
benchmark; `--stop-at` ends the run once the test accuracy reaches it, as our probe does).
"""
import json
import time
from argparse import ArgumentParser

START = time.time()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402
import torchvision.transforms as transforms  # noqa: E402
import wandb  # noqa: E402

device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def get_data(root, slice=5, train=True):
    full_dataset = torchvision.datasets.FashionMNIST(root=root, train=train, transform=transforms.ToTensor(),
                                                     download=False)
    return torch.utils.data.Subset(full_dataset, indices=range(0, len(full_dataset), slice))


def make_loader(dataset, batch_size):
    return torch.utils.data.DataLoader(dataset=dataset, batch_size=batch_size, shuffle=True, pin_memory=True,
                                       num_workers=2)


class ConvNet(nn.Module):
    def __init__(self, kernels, classes=10):
        super(ConvNet, self).__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, kernels[0], kernel_size=5, stride=1, padding=2), nn.ReLU(),
                                    nn.MaxPool2d(kernel_size=2, stride=2))
        self.layer2 = nn.Sequential(nn.Conv2d(16, kernels[1], kernel_size=5, stride=1, padding=2), nn.ReLU(),
                                    nn.MaxPool2d(kernel_size=2, stride=2))
        self.fc = nn.Linear(7 * 7 * kernels[-1], classes)

    def forward(self, x):
        out = self.layer1(x)
        out = self.layer2(out)
        out = out.reshape(out.size(0), -1)
        return self.fc(out)


def train_batch(images, labels, model, optimizer, criterion):
    images, labels = images.to(device), labels.to(device)
    outputs = model(images)
    loss = criterion(outputs, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def train_log(loss, example_ct, epoch):
    wandb.log({"epoch": epoch, "loss": loss}, step=example_ct)
    print(f"Loss after {str(example_ct).zfill(5)} examples: {loss:.3f}")


def test(model, test_loader):
    model.eval()
    with torch.no_grad():
        correct, total = 0, 0
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            outputs = model(images)
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    model.train()
    return correct / total


def train(model, loader, test_loader, criterion, optimizer, config, stop_at):
    wandb.watch(model, criterion, log="all", log_freq=10)
    example_ct = 0
    batch_ct = 0
    for epoch in range(config.epochs):
        for _, (images, labels) in enumerate(loader):
            loss = train_batch(images, labels, model, optimizer, criterion)
            example_ct += len(images)
            batch_ct += 1
            if ((batch_ct + 1) % 25) == 0:
                train_log(loss, example_ct, epoch)
        accuracy = test(model, test_loader)  # the bench's probe: the tutorial's test pass after every epoch
        print("BENCH " + json.dumps({"epoch": epoch + 1, "test_accuracy": accuracy,
                                     "seconds_since_start": time.time() - START,
                                     "at": time.time()}), flush=True)
        if stop_at and accuracy >= stop_at:
            break


def model_pipeline(hyperparameters, root, slice, stop_at):
    with wandb.init(project="pytorch-demo", config=hyperparameters, mode="offline"):
        config = wandb.config
        train_data, test_data = get_data(root, slice, train=True), get_data(root, 1, train=False)
        train_loader = make_loader(train_data, batch_size=config.batch_size)
        test_loader = make_loader(test_data, batch_size=config.batch_size)
        model = ConvNet(config.kernels, config.classes).to(device)
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        train(model, train_loader, test_loader, criterion, optimizer, config, stop_at)
        accuracy = test(model, test_loader)
        wandb.log({"test_accuracy": accuracy})
        images, _ = next(iter(test_loader))
        torch.onnx.export(model, images.to(device), "model.onnx")
        wandb.save("model.onnx")
    return model


if __name__ == "__main__":
    parser = ArgumentParser()
    parser.add_argument("--root", required=True, help="holds FashionMNIST/raw/*-ubyte")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--slice", type=int, default=1)
    parser.add_argument("--stop-at", type=float, default=None)
    args = parser.parse_args()
    config = dict(epochs=args.epochs, classes=10, kernels=[16, 32], batch_size=128, learning_rate=0.005,
                  dataset="Fashion-MNIST", architecture="CNN")
    model_pipeline(config, args.root, args.slice, args.stop_at)
