"""The MuJoCo scene: a needle on an x/y/z carriage above a spring-mounted tissue plate.

Lengths in this module's public API are millimetres; MuJoCo works in metres inside. The scene is
compiled once per environment; each episode only rewrites the hidden parameters in the compiled
model (surface height, stiffness, damping, target marker), so the renderer's GL context survives
episodes.

What the cameras see: a uniform table, a red target ring on it (xy of the target) and the needle.
The tissue plate is in geom group 3, which is never rendered, so its height and its deflection are
invisible; the table sits below the lowest possible surface at a fixed height. "left" looks straight
down through an orthographic lens (no perspective: no height cue at all); "oak" looks obliquely and
shows the needle's absolute height above the table, which does not tell the depth below a surface
whose height is drawn at random each episode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PHYSICS_HZ = 650.0
CONTROL_HZ = 10.0
SUBSTEPS = round(PHYSICS_HZ / CONTROL_HZ)  # 65 physics steps (and sensor samples) per control step
TIP_START_MM = (0.0, 0.0, 10.0)  # needle tip at reset (x, y, z)
NEEDLE_LENGTH_MM = 20.0  # needle base to the centre of its rounded point
TIP_RADIUS_MM = 0.3  # the point: the "tip" is its lowest point, NEEDLE_LENGTH_MM + TIP_RADIUS_MM below the base
TABLE_TOP_MM = -4.0  # visual only; below the lowest surface minus the target depth
MAX_STEP_MM = 1.0  # per axis per control step (10 mm/s); larger commands are clipped
WORKSPACE_MM = ((-8.0, 8.0), (-8.0, 8.0), (-6.0, 14.0))  # tip setpoint limits (x, y, z)
PLATE_MASS_KG = 0.1
NEEDLE_MASS_KG = 0.005  # its weight is what the force sensor reads before zeroing
CARRIAGE_MASS_KG = 1.0
SERVO_KP = 5e4  # N/m per carriage axis; critically damped
VIEWS = ("left", "oak")
IMAGE_SIZE = 64  # rendered camera size, square (the data config's generated recordings are 64 too)
EPISODE_SECONDS = 6.0  # the time limit of an episode (60 control steps)


@dataclass(frozen=True)
class SceneRanges:
    """Uniform ranges of the per-episode hidden parameters."""

    surface_mm: tuple[float, float] = (0.0, 6.0)
    stiffness_n_per_m: tuple[float, float] = (300.0, 1200.0)
    target_xy_mm: tuple[float, float] = (-3.0, 3.0)
    damping_ratio: float = 1.0


@dataclass(frozen=True)
class SceneParams:
    """One episode's hidden parameters (not visible in the images)."""

    surface_mm: float  # rest height of the tissue surface
    stiffness_n_per_m: float  # spring constant of the tissue plate
    target_x_mm: float
    target_y_mm: float

    @classmethod
    def sample(cls, rng: np.random.Generator, ranges: SceneRanges = SceneRanges()) -> SceneParams:
        return cls(
            surface_mm=float(rng.uniform(*ranges.surface_mm)),
            stiffness_n_per_m=float(rng.uniform(*ranges.stiffness_n_per_m)),
            target_x_mm=float(rng.uniform(*ranges.target_xy_mm)),
            target_y_mm=float(rng.uniform(*ranges.target_xy_mm)),
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class SuccessCriterion:
    """Success: the tip held at the target for ``hold_s`` with the peak force never above the limit.

    Held means at rest, not passing through: over the last ``hold_s`` the tip's depth varies by at
    most ``hold_travel_mm``. Without that bound a policy that knows nothing of the depth succeeds by
    descending slowly through the 0.6 mm band (a sensor-off policy's successes travelled 0.30-0.63 mm
    during their 0.5 s "hold", a sensor-on policy's 0.02-0.23 mm; docs/sim.md).
    """

    target_depth_mm: float = 2.0  # below the hidden rest surface
    depth_tolerance_mm: float = 0.3
    lateral_tolerance_mm: float = 1.0  # tip xy to the target marker
    hold_s: float = 0.5
    hold_travel_mm: float = 0.3  # the depth's range over the hold (half the band: a pass-through covers it all)
    force_limit_n: float = 4.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# "left": straight down, orthographic (fovy is the field's height in metres); "oak": from the front
# (-y), 45 degrees down, aimed at the origin.
CAMERAS_XML = """<camera name="left" pos="0 0 0.08" xyaxes="1 0 0 0 1 0" projection="orthographic" fovy="0.018"/>
    <camera name="oak" pos="0 -0.035 0.035" xyaxes="1 0 0 0 0.032 0.035" fovy="30"/>"""


def scene_xml(image_size: int = 64) -> str:
    """The MJCF of the scene with placeholder hidden parameters (set per episode by :func:`apply_params`)."""
    mm = 1e-3
    tx, ty, tz = (v * mm for v in TIP_START_MM)
    base_z = tz + (NEEDLE_LENGTH_MM + TIP_RADIUS_MM) * mm
    kv = 2.0 * np.sqrt(SERVO_KP * CARRIAGE_MASS_KG)
    size = max(64, int(image_size))
    servo = f'kp="{SERVO_KP}" kv="{kv:.3f}" ctrllimited="false"'
    return f"""
<mujoco model="needle_insertion">
  <option timestep="{1.0 / PHYSICS_HZ:.10f}" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0"/>
    <global offwidth="{size}" offheight="{size}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <geom contype="0" conaffinity="0"/>
    <site group="4"/>
  </default>
  <worldbody>
    <light pos="0 -0.05 0.3" dir="0 0.15 -1" directional="true" castshadow="false" diffuse="0.5 0.5 0.5"/>
    {CAMERAS_XML}
    <geom name="table" type="box" pos="0 0 {TABLE_TOP_MM * mm - 0.001}" size="0.04 0.04 0.001"
          rgba="0.62 0.58 0.52 1"/>
    <body name="target" pos="0 0 {TABLE_TOP_MM * mm}">
      <geom name="target_ring" type="cylinder" size="0.0016 0.00005" rgba="0.85 0.12 0.12 1"/>
      <geom name="target_hole" type="cylinder" pos="0 0 0.00003" size="0.0009 0.00005" rgba="0.62 0.58 0.52 1"/>
    </body>
    <body name="tissue" pos="0 0 0" gravcomp="1">
      <joint name="tissue_z" type="slide" axis="0 0 1" stiffness="500" damping="10"/>
      <geom name="plate" type="box" size="0.03 0.03 0.002" pos="0 0 -0.002" mass="{PLATE_MASS_KG}" group="3"
            contype="1" conaffinity="1" friction="0.05 0.005 0.0001" solref="0.0031 1" solimp="0.99 0.999 0.0001"/>
    </body>
    <body name="carriage" pos="{tx} {ty} {base_z}" gravcomp="1">
      <joint name="carriage_x" type="slide" axis="1 0 0"/>
      <joint name="carriage_y" type="slide" axis="0 1 0"/>
      <joint name="carriage_z" type="slide" axis="0 0 1"/>
      <geom name="hub" type="cylinder" pos="0 0 0.003" size="0.0012 0.003" mass="{CARRIAGE_MASS_KG}"
            rgba="0.15 0.25 0.7 1"/>
      <geom name="arm" type="box" pos="0.012 0 0.005" size="0.012 0.0008 0.0008" mass="0.001" rgba="0.3 0.3 0.33 1"/>
      <body name="needle">
        <site name="needle_base"/>
        <geom name="shaft" type="cylinder" fromto="0 0 0 0 0 {-NEEDLE_LENGTH_MM * mm}" size="0.0005"
              mass="{NEEDLE_MASS_KG}" rgba="0.85 0.85 0.9 1"/>
        <geom name="tip" type="sphere" pos="0 0 {-NEEDLE_LENGTH_MM * mm}" size="{TIP_RADIUS_MM * mm}" mass="0.00001"
              contype="1" conaffinity="1" rgba="0.9 0.9 0.95 1"/>
        <site name="tip" pos="0 0 {-(NEEDLE_LENGTH_MM + TIP_RADIUS_MM) * mm}"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <position name="servo_x" joint="carriage_x" {servo}/>
    <position name="servo_y" joint="carriage_y" {servo}/>
    <position name="servo_z" joint="carriage_z" {servo}/>
  </actuator>
  <sensor>
    <force name="needle_force" site="needle_base"/>
  </sensor>
</mujoco>
"""


def apply_params(model, params: SceneParams, ranges: SceneRanges = SceneRanges()) -> None:
    """Write an episode's hidden parameters into the compiled model (no recompilation)."""
    mm = 1e-3
    body = model.body("tissue").id
    joint = model.joint("tissue_z")
    model.body_pos[body] = (0.0, 0.0, params.surface_mm * mm)
    model.jnt_stiffness[joint.id] = params.stiffness_n_per_m
    model.dof_damping[joint.dofadr[0]] = 2.0 * ranges.damping_ratio * np.sqrt(params.stiffness_n_per_m * PLATE_MASS_KG)
    model.body_pos[model.body("target").id] = (params.target_x_mm * mm, params.target_y_mm * mm, TABLE_TOP_MM * mm)
