"""The learner and pool the Label Studio tests serve (``python -m skal.label_studio
serve digits_pool.py``): digits written as PNG files, an MLP over their pixels.

``SKAL_TEST_POOL`` names the image folder; ``SKAL_TEST_EPOCHS`` the epochs per
training (more make a training long enough to be interrupted).
"""

import os

import skal
from skal.label_studio import ImageFolder

pool = ImageFolder(os.environ["SKAL_TEST_POOL"], preload=True)
learner = skal.ActiveLearner(
    skal.NeuralNetClassifier(
        skal.nets.MLP,
        module__hidden_units=(32,),
        max_epochs=int(os.environ.get("SKAL_TEST_EPOCHS", "10")),
        lr=3e-3,
        train_split=None,
        verbose=0,
    ),
    strategy="margin",
    classes=list(range(10)),
    random_state=0,
)
