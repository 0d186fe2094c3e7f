"""Writing derived structures as a new RT Structure Set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from dvheval.dicom import ROI
from dvheval.engine.derive.build import derive_structures
from dvheval.errors import InputError


# ------------------------------------------------------------------ writing
def write_derived_rtstruct(source: str | Path, rois: Sequence[ROI], out: str | Path,
                           inputs: Sequence[str | Path] = ()) -> str:
    """Write derived ROIs as a new RT Structure Set next to their source.

    The new object references the source's Frame of Reference, Study and
    referenced image series, copies the patient identity and gets a new SOP
    Instance UID.

    Parameters
    ----------
    source : path
        The structure set the ROIs were derived from.
    rois : sequence of ROI
    out : path
        File to write; refused when it is ``source`` or one of ``inputs``.
    inputs : sequence of path
        Every input file of the plan (never overwritten).

    Returns
    -------
    str
        The new SOP Instance UID.

    Raises
    ------
    InputError
        When ``out`` is an input file or cannot be written.
    """
    import pydicom

    from dvheval.dicom.writer import ROISpec, write_rtstruct

    out_path = Path(out)
    protected = {Path(source).resolve(), *(Path(p).resolve() for p in inputs)}
    if out_path.resolve() in protected:
        raise InputError("refusing to overwrite an input file; choose another output file",
                         out_path, "--write-rtstruct")
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    for_uid = ""
    series_uid = None
    frames = ds.get("ReferencedFrameOfReferenceSequence") or []
    if frames:
        for_uid = str(frames[0].get("FrameOfReferenceUID", "") or "")
        for study in frames[0].get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                series_uid = str(series.get("SeriesInstanceUID", "") or "") or None
                break
            break
    for_uid = for_uid or str(ds.get("FrameOfReferenceUID", "") or "") or \
        next((r.frame_of_reference_uid for r in rois if r.frame_of_reference_uid), "")
    specs = [ROISpec(r.number, r.name, r.interpreted_type,
                     tuple((c.geometric_type, c.points) for c in r.contours)) for r in rois]
    try:
        return write_rtstruct(
            out_path, specs, frame_of_reference_uid=for_uid,
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
            patient_name=str(ds.get("PatientName", "") or ""),
            patient_birth_date=str(ds.get("PatientBirthDate", "") or ""),
            patient_sex=str(ds.get("PatientSex", "") or ""),
            label="DERIVED", referenced_series_uid=series_uid)
    except OSError as exc:
        raise InputError(f"cannot write the structure set ({exc})", out_path) from exc


def write_derived_for_plan(paths: Sequence[str | Path],
                           derivations: Mapping[str, str] | Sequence[str],
                           out: str | Path, thickness: float | None,
                           end_caps: bool = True) -> str:
    """Derive structures of a plan's structure set and write them to ``out``.

    Parameters
    ----------
    paths : sequence of path
        The plan's files and folders (as given to :func:`~dvheval.compute_dvhs`).
    derivations : mapping or sequence of ``"NAME=EXPRESSION"``
    out : path
        The new RT Structure Set; never one of the input files.
    thickness : float or None
        Plane spacing (the ``slice_thickness_mm`` setting of the DVH result).
    end_caps : bool

    Returns
    -------
    str
        The new SOP Instance UID.
    """
    from dvheval.dicom import expand_paths, find_inputs, read_structure_set

    files = expand_paths(paths)
    refuse_input_target(out, files)
    sset = read_structure_set(find_inputs(paths, several_plans=True).structure_set.path)
    built = derive_structures(sset, derivations, thickness, end_caps)
    return write_derived_rtstruct(sset.path, built.rois, out, inputs=files)


def refuse_input_target(out: str | Path, files: Sequence[str | Path]) -> None:
    """Raise InputError when ``out`` is one of ``files`` (an input is never overwritten)."""
    target = Path(out).resolve()
    if any(Path(f).resolve() == target for f in files):
        raise InputError("refusing to overwrite an input file; choose another output file",
                         out, "--write-rtstruct")
