"""Surface extraction alone on a saved volume; prints JSON with the seconds.

    python bench/extract.py VOLUME.npy {ephemesh|skimage|vtk|write} THREADS

Imports (and loading ephemesh's compiled kernels) happen before the clock
starts, for every extractor alike.  ``write`` times the binary STL writer on
the mesh of the volume (vertices in float64 millimetres, as the pipeline
holds them).
"""

import json
import os
import sys
import time

import numpy as np

LEVEL = 300.0


def main():
    vol = np.load(sys.argv[1])
    which, threads = sys.argv[2], int(sys.argv[3])
    info = {}
    if which == "ephemesh":
        # the import loads the compiled kernel: outside the timing, as VTK's import is
        from converter.marching import marching_cubes

        t = time.perf_counter()
        verts, faces = marching_cubes(vol, LEVEL, workers=threads)
        seconds = time.perf_counter() - t
        info["triangles"] = len(faces)
    elif which == "skimage":
        from skimage.measure import marching_cubes

        t = time.perf_counter()
        verts, faces, _, _ = marching_cubes(vol, LEVEL)
        seconds = time.perf_counter() - t
        info["triangles"] = len(faces)
    elif which == "vtk":
        import vtk
        from vtk.util import numpy_support

        vtk.vtkSMPTools.Initialize(1)
        image = vtk.vtkImageData()
        image.SetDimensions(vol.shape[2], vol.shape[1], vol.shape[0])
        image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(vol.ravel(), deep=False))
        fe = vtk.vtkFlyingEdges3D()
        fe.SetInputData(image)
        fe.SetValue(0, LEVEL)
        fe.ComputeNormalsOff()
        fe.ComputeGradientsOff()
        fe.ComputeScalarsOff()
        t = time.perf_counter()
        fe.Update()
        seconds = time.perf_counter() - t
        info["triangles"] = fe.GetOutput().GetNumberOfCells()
    elif which == "write":
        from converter.marching import marching_cubes
        from converter.stl import write_binary

        verts, faces = marching_cubes(vol, LEVEL, workers=2)
        verts = verts.astype(np.float64) * 0.7 - 180.0
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else os.path.dirname(sys.argv[1])
        path = os.path.join(folder, f"ephemesh-bench-{os.getpid()}.stl")
        try:
            t = time.perf_counter()
            size = write_binary(verts, faces, path)
            seconds = time.perf_counter() - t
        finally:
            if os.path.exists(path):
                os.unlink(path)
        info["bytes"] = size
        info["triangles"] = len(faces)
    else:
        raise SystemExit(f"unknown extractor {which}")
    info["seconds"] = seconds
    print(json.dumps(info))


if __name__ == "__main__":
    main()
