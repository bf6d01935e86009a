"""The study-file schema: typed, validated where it enters, one description per field.

A study file is data. Nothing in it is evaluated, except an explicitly named model factory
(`model.factory: module:function`), which runs the user's own code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METRICS = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "train_val_gap",
    "epoch_seconds",
    "images_per_s",
)
LAYER_KINDS = ("conv", "linear", "norm", "act", "pool", "adaptive_pool", "flatten", "dropout")
STANDARD_ORDER = ("conv", "linear", "flatten", "norm", "act", "pool", "adaptive_pool", "dropout")


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# ---------------------------------------------------------------- layers


class ConvLayer(Strict):
    type: Literal["conv"] = Field(description="2-D convolution.")
    channels: int = Field(gt=0, description="Number of output channels (filters).")
    kernel: int = Field(3, gt=0, description="Square kernel size in pixels.")
    stride: int = Field(1, gt=0, description="Step of the kernel in pixels.")
    padding: int | Literal["same"] = Field(
        "same", description="Zero padding in pixels, or 'same' to keep the size at stride 1."
    )
    bias: bool | Literal["auto"] = Field(
        "auto", description="Learn a bias; 'auto' drops it when a batch norm follows."
    )


class LinearLayer(Strict):
    type: Literal["linear"] = Field(description="Fully connected layer.")
    units: int = Field(gt=0, description="Number of output features.")
    in_features: int | None = Field(
        None, gt=0, description="Input size; inferred. Set only to assert what you expect."
    )


class NormLayer(Strict):
    type: Literal["norm"] = Field(description="Normalization layer.")
    kind: Literal["batch", "layer", "group", "instance", "none"] = Field(
        "batch", description="batch, layer, group, instance, or none (no layer)."
    )
    groups: int = Field(8, gt=0, description="Number of groups for kind 'group'.")


class ActLayer(Strict):
    type: Literal["act"] = Field(description="Activation function.")
    fn: Literal["relu", "gelu", "silu", "leaky_relu", "tanh"] = Field(
        "relu", description="relu, gelu, silu, leaky_relu or tanh."
    )
    negative_slope: float = Field(0.01, ge=0, description="Slope below zero for leaky_relu.")


class PoolLayer(Strict):
    type: Literal["pool"] = Field(description="Pooling over a square window.")
    kind: Literal["max", "avg"] = Field("max", description="max or avg.")
    size: int = Field(2, gt=0, description="Window size in pixels.")
    stride: int | None = Field(None, gt=0, description="Step; defaults to the window size.")


class AdaptivePoolLayer(Strict):
    type: Literal["adaptive_pool"] = Field(description="Pooling to a fixed output size.")
    kind: Literal["max", "avg"] = Field("avg", description="max or avg.")
    output: int = Field(1, gt=0, description="Output height and width.")


class FlattenLayer(Strict):
    type: Literal["flatten"] = Field(description="Flatten feature maps to vectors.")


class DropoutLayer(Strict):
    type: Literal["dropout"] = Field(description="Dropout.")
    p: float = Field(0.5, ge=0, lt=1, description="Probability of zeroing an element.")
    kind: Literal["auto", "element", "channel"] = Field(
        "auto",
        description="element (nn.Dropout), channel (nn.Dropout2d), or auto: channel on "
        "feature maps, element on vectors.",
    )


Layer = Annotated[
    ConvLayer
    | LinearLayer
    | NormLayer
    | ActLayer
    | PoolLayer
    | AdaptivePoolLayer
    | FlattenLayer
    | DropoutLayer,
    Field(discriminator="type"),
]


class Block(Strict):
    layers: list[Layer] = Field(min_length=1, description="The layers of one repetition.")
    repeat: int = Field(1, ge=0, description="How many times the block is stacked (0 drops it).")
    order: Literal["standard", "as_written"] = Field(
        "standard",
        description="standard: conv/linear, norm, act, pool, dropout whatever the written "
        "order; as_written: exactly as listed.",
    )
    name: str | None = Field(None, description="Label in summaries; defaults to block<i>.")


class ModelConfig(Strict):
    blocks: list[Block] = Field(
        default_factory=list, description="Blocks in order; an output layer is appended."
    )
    factory: str | None = Field(
        None,
        description="module:function returning your own nn.Module; it runs your code and "
        "receives the resolved model settings.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Free settings passed to a model factory."
    )

    @model_validator(mode="after")
    def _blocks_or_factory(self) -> ModelConfig:
        if not self.blocks and self.factory is None:
            raise ValueError("give model.blocks (a list of blocks) or model.factory")
        return self


# ---------------------------------------------------------------- data and training


class DataConfig(Strict):
    dataset: Literal["fashion-mnist", "mnist", "digits", "folder"] = Field(
        "fashion-mnist", description="fashion-mnist, mnist, digits (8x8, offline) or folder."
    )
    root: str | None = Field(
        None,
        description="Folder of images, one sub-folder per class (dataset 'folder'); a relative "
        "path is read from the working folder.",
    )
    image_size: int = Field(32, gt=0, description="Side images are resized to (dataset 'folder').")
    channels: Literal[1, 3] = Field(1, description="1 (grayscale) or 3 (RGB) for 'folder'.")
    subset: int | None = Field(
        None,
        gt=0,
        description="Images per class drawn (stratified, seeded) from the training set before "
        "the train/validation split; all when unset.",
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the training set held out for validation."
    )
    split_seed: int = Field(0, description="Seed of the stratified train/validation split.")


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = Field("adam", description="sgd, adam or adamw.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw).")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum for sgd.")


class ScheduleConfig(Strict):
    name: Literal["none", "step", "cosine", "plateau"] = Field(
        "none", description="none, step, cosine, or plateau (reduce on plateau)."
    )
    step_size: int = Field(5, gt=0, description="Epochs between decays for 'step'.")
    gamma: float = Field(0.1, gt=0, le=1, description="Decay factor for 'step' and 'plateau'.")
    patience: int = Field(2, ge=0, description="Epochs without improvement for 'plateau'.")


class EarlyStoppingConfig(Strict):
    patience: int | None = Field(
        None, gt=0, description="Stop after this many epochs without a better val_loss."
    )
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as better.")


class TrainingConfig(Strict):
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Optimizer.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="LR schedule.")
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="Early stopping on val_loss."
    )
    batch_size: int = Field(128, gt=0, description="Training batch size.")
    epochs: int = Field(5, gt=0, description="Maximum number of epochs.")
    seed: int = Field(0, description="Seed of weights, shuffling and dropout.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto picks bf16 where the hardware runs it natively, else fp32."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto picks cuda, then mps, then cpu."
    )
    threads: int | None = Field(
        None, gt=0, description="CPU threads for torch; all cores when unset."
    )


# ---------------------------------------------------------------- studies


class SearchParam(Strict):
    values: list[Any] | dict[str, Any] | None = Field(
        None,
        description="The levels to try (categorical): a list, or named levels {name: value} "
        "whose names the results and report show and whose values fill ${name}.",
    )
    low: float | None = Field(None, description="Lower bound of a range.")
    high: float | None = Field(None, description="Upper bound of a range.")
    log: bool = Field(False, description="Sample a range on a log scale.")
    step: float | None = Field(None, gt=0, description="Step of a range.")
    int: bool = Field(False, description="The range holds integers.")

    @field_validator("values", mode="before")
    @classmethod
    def _level_names_are_text(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for name in values:
                if not isinstance(name, str):
                    # YAML reads on/off/yes/no/true/false and numbers as values, not text.
                    raise ValueError(
                        f"the level name {name!r} is not text; quote it, for YAML reads "
                        "yes, no, on, off, true, false and numbers as values"
                    )
        return values

    @model_validator(mode="after")
    def _values_or_range(self) -> SearchParam:
        if self.values is not None:
            if not self.values:
                raise ValueError("values must list at least one level")
            if self.low is not None or self.high is not None:
                raise ValueError("give either values or low/high, not both")
        elif self.low is None or self.high is None:
            raise ValueError("give values: [...] or a range with low and high")
        elif self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def is_range(self) -> bool:
        return self.values is None

    @property
    def levels(self) -> list[Any] | None:
        """The levels as results and claims name them: the names of named levels."""
        return None if self.values is None else list(self.values)

    def setting(self, level: Any) -> Any:
        """What fills ${name} at this level: the value of a named level, else the level."""
        if not isinstance(self.values, dict):
            return level
        if level not in self.values:
            raise ValueError(f"{level!r} is not one of the named levels {list(self.values)}")
        return self.values[level]


class SearchConfig(Strict):
    params: dict[str, SearchParam] = Field(
        default_factory=dict, description="Params to vary; refer to them as ${name}."
    )
    method: Literal["grid", "random", "tpe", "gp"] = Field(
        "grid", description="grid (full factorial), random, tpe or gp (Optuna samplers)."
    )
    seeds: int = Field(1, gt=0, description="Replicates: each configuration is trained k times.")
    trials: int | None = Field(None, gt=0, description="Configurations to try (search methods).")
    timeout: float | None = Field(None, gt=0, description="Seconds after which no trial starts.")
    pruner: Literal["none", "median", "halving"] = Field(
        "none", description="none, median, or halving (successive halving); search methods only."
    )
    metric: Literal["val_acc", "val_loss"] = Field("val_acc", description="Metric to optimize.")
    grid_points: int = Field(
        3, gt=1, description="Levels taken from a range when the method is grid."
    )

    @model_validator(mode="after")
    def _pruner_needs_search(self) -> SearchConfig:
        if self.method == "grid" and self.pruner != "none":
            # A pruned grid cell would leave a hole in the factorial design the analysis needs.
            raise ValueError(
                f"pruner {self.pruner} stops runs early, which a grid cannot have (every cell "
                "trains fully); use method random, tpe or gp, or pruner none"
            )
        return self


class Claim(Strict):
    kind: Literal["interaction", "effect", "beats"] = Field(
        description="interaction (two params), effect (one param), beats (one level vs another)."
    )
    params: list[str] | None = Field(None, description="The two params of an interaction.")
    param: str | None = Field(None, description="The param of an effect or beats claim.")
    direction: Literal["any", "increasing", "decreasing"] = Field(
        "any", description="Expected direction of an effect."
    )
    level: Any = Field(None, description="The level expected to win (beats).")
    other: Any = Field(None, description="The level expected to lose (beats).")
    within: dict[str, Any] | None = Field(
        None, description="Restrict a beats claim to one level of another param."
    )

    @model_validator(mode="after")
    def _complete(self) -> Claim:
        if self.kind == "interaction" and (self.params is None or len(self.params) != 2):
            raise ValueError("an interaction claim needs params: [a, b]")
        if self.kind in ("effect", "beats") and self.param is None:
            raise ValueError(f"a {self.kind} claim needs param")
        if self.kind == "beats" and (self.level is None or self.other is None):
            raise ValueError("a beats claim needs level and other")
        if self.kind == "beats" and self.level == self.other:
            raise ValueError(
                f"a beats claim compares two levels; level and other are both {self.level!r}"
            )
        if self.kind != "beats" and (self.level is not None or self.other is not None):
            raise ValueError(f"level and other belong to beats claims, not to {self.kind}")
        if self.kind != "beats" and self.within:
            raise ValueError(f"within belongs to beats claims, not to {self.kind}")
        if self.kind == "beats" and self.param in (self.within or {}):
            raise ValueError(f"within cannot fix {self.param}, the param the claim compares")
        return self


class Hypothesis(Strict):
    text: str = Field("", description="What you expect and why, written before the runs.")
    claims: list[Claim] = Field(default_factory=list, description="Machine-checkable claims.")


FigureKind = Literal["heatmap", "interaction", "main_effects", "curves", "gap", "importance"]


class ReportConfig(Strict):
    figures: list[FigureKind] = Field(
        default_factory=lambda: list[FigureKind](["heatmap", "interaction"]),
        description="Figures on the page, by kind: heatmap, interaction, main_effects, "
        "curves, gap, importance.",
    )
    reflection: str = Field("", description="Your reflection, or a file next to the study.")
    title: str | None = Field(None, description="Report title; defaults to the study name.")


class Study(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Study name (experiment name).")
    description: str = Field("", description="One line on what the study is for.")
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset and split.")
    model: ModelConfig = Field(description="The model: blocks of layers, or a factory.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Training.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="What to vary.")
    hypothesis: Hypothesis = Field(default_factory=Hypothesis, description="Your hypothesis.")
    budgets: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named presets of dotted overrides, chosen with --budget (quick, full).",
    )
    report: ReportConfig = Field(default_factory=ReportConfig, description="The A4 report.")

    @model_validator(mode="after")
    def _batch_norm_needs_pairs(self) -> Study:
        # Batch statistics of one sample are undefined; every other batch size is made safe
        # by construction (a last batch of one is folded into the batch before it).
        uses_bn = any(
            isinstance(layer, NormLayer) and layer.kind == "batch"
            for block in self.model.blocks
            if block.repeat > 0
            for layer in block.layers
        )
        if uses_bn and self.training.batch_size < 2:
            raise ValueError(
                "training.batch_size 1 cannot train batch normalization (it needs at least 2 "
                "samples per batch); use a batch size of 2 or more, or norm kind layer or group"
            )
        return self
