"""The file formats users write, from the pydantic models that read them."""

from __future__ import annotations

import importlib

from scripts.docs_reference.render import header, model_tables

# (title, where the files live, the model that reads one). A format whose module is not in
# the library yet is left out, so the page follows the code as it lands.
FORMATS = (
    ("Data set spec", "include/datasets/<name>.yaml", "ctcd.data.spec:DatasetSpec"),
    ("Model file", "include/models/<name>.yaml", "ctcd.models.definition:ModelDefinition"),
)


def page() -> str:
    text = header("the pydantic models that read include/ files")
    for title, where, target in FORMATS:
        module_name, _, name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue
            raise
        model = getattr(module, name)
        doc = (model.__doc__ or "").strip()
        text += f"\n## {title}: `{where}`\n\nRead by `{module_name}.{name}`.\n\n"
        text += (f"{doc}\n\n" if doc else "") + model_tables(model)
    return text
