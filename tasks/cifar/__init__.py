"""CIFAR-10 tasks: AlexNet (``cifar``) and VGG-16 (``cifar-vgg``) with regularisation and augmentation
hyperparameters; see ``task.py`` (search space, presets), ``data.py``, ``augment.py``, ``model.py``, ``stn.py``."""
