"""Models: the torch-free model card and export format, and the torch side (backbones, classifier, weights).

Import from the modules: :mod:`~braintumor.models.card`, :mod:`~braintumor.models.decision` and
:mod:`~braintumor.models.export_dir` need no torch (serving reads them); :mod:`~braintumor.models.registry`,
:mod:`~braintumor.models.net`, :mod:`~braintumor.models.factory` and :mod:`~braintumor.models.weights` build and
load networks with torch. This file imports nothing, so reading a card never pulls torch in.

Example:
    >>> from braintumor.models.factory import create_model
    >>> from braintumor.models.registry import list_models
    >>> "resnet50" in list_models()
    True
    >>> model = create_model("mobilenet_v2", num_classes=1)  # pretrained=True needs the cached weights
    >>> model.card.input_size, model.card.class_names
    (224, ['no_tumor', 'tumor'])
"""
