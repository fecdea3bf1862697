"""Results back into the hospital: DICOM outputs (SR + Secondary Capture) and a PACS client over DICOMweb.

Why a package of its own: a result that lives only in our web app is invisible to the radiologist's viewer. This
package turns predictions into DICOM objects of the source's study and moves DICOM to and from a PACS. It reads
imaging and inference results but knows nothing of the API or storage, and needs no torch.
"""
