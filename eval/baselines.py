"""What a probe number means: the chance level of its test set, and the floors a trained encoder
must beat on the same images (raw pixels, and a random-init network of the same backbone)."""

from __future__ import annotations

from gcl.eval.features import raw_pixel_encoder, random_encoder


def measure_baselines(encoder, train_data: str, test_data: str, limit_train, limit_test, cache_dir, batch_size: int,
                      device: str, log, **probe_kwargs) -> dict[str, float]:
    """top-1 of raw pixels and of the random-init backbone on the images the encoder was scored on."""
    from gcl.eval.probe import run_probe

    info = encoder.info
    floors = {"raw pixels": raw_pixel_encoder(encoder.resolution)}
    if info.get("backbone"):
        floors[f"random-init {info['backbone']}"] = random_encoder(
            info["backbone"], cifar_stem=bool(info.get("cifar_stem", True)), resolution=encoder.resolution,
            device=device)
    out = {}
    for name, floor in floors.items():
        log(f"baseline: {floor.describe}")
        rec = run_probe("knn", floor, train_data, test_data, limit_train=limit_train, limit_test=limit_test,
                        cache_dir=cache_dir if name != "raw pixels" else None, batch_size=batch_size,
                        log=lambda _msg: None, **probe_kwargs)
        out[name] = round(float(rec["top1"]), 2)
    return out


def chance_line(record: dict) -> str:
    return (f"chance {record['chance_top1']:.1f}%: always answering the most frequent class of the "
            f"{record['n_test']} test images ({record['num_classes']} classes)")


def baseline_line(record: dict) -> str:
    floors = ", ".join(f"{name} {top1:.2f}%" for name, top1 in record["baselines"].items())
    verdict = "above" if all(record["top1"] > v for v in record["baselines"].values()) else "NOT above"
    return f"baselines on the same images: {floors}; this encoder is {verdict} them"
