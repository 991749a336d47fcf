"""Subprocess entry: train one nnU-Net fold with a given schedule.

``python -m bridge_xr.learn._train_worker DATASET_ID FOLD DEVICE EPOCHS ITERATIONS`` with the
nnU-Net environment variables set (see :func:`bridge_xr.learn.nnunet.environment`).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as Base
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    did, fold, device, epochs, iterations = argv
    name = maybe_convert_to_dataset_name(int(did))
    assert nnUNet_preprocessed is not None
    plans = load_json(join(nnUNet_preprocessed, name, "nnUNetPlans.json"))
    dataset_json = load_json(join(nnUNet_preprocessed, name, "dataset.json"))
    n_epochs, n_iter = int(epochs), int(iterations)

    # same class name as nnU-Net's trainer: checkpoints and result folders stay standard
    class nnUNetTrainer(Base):  # type: ignore[misc]  # nnU-Net is untyped
        # nnU-Net records the __init__ arguments by name: keep its exact signature
        def __init__(
            self,
            plans: dict,  # type: ignore[type-arg]
            configuration: str,
            fold: int,
            dataset_json: dict,  # type: ignore[type-arg]
            device: torch.device = torch.device("cuda"),
        ) -> None:
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = n_epochs
            self.num_iterations_per_epoch = n_iter
            self.num_val_iterations_per_epoch = max(1, n_iter // 5)

    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    trainer = nnUNetTrainer(plans, "2d", int(fold), dataset_json, torch.device(device))
    trainer.run_training()
    trainer.perform_actual_validation(False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
