"""The image store and what fills it: built-in builds, OCI pulls, imports, packs.

auth.py       Registry credentials
builtin.py    Images microbox makes itself (busybox, debian[:SUITE]) and how a name...
busybox.py    The `busybox` image
commit.py     A box's disk (a qcow2 overlay and its backing chain) made an image
config.py     An image's run configuration (OCI config) and Docker's rules for it
debian.py     The `debian` image
flatten.py    Flatten OCI layers into one tar stream, with the standard `tarfile` module
importer.py   `image import`
mkfs.py       `mke2fs -d -`
oci_layout.py An OCI image layout of one image of one gzip layer, for pushes
pack.py       Packs
progress.py   How image builders report progress
pull.py       `image pull`
push.py       `image push`: a box's export as a layer, the image's config, skopeo
reference.py  Image references as Docker reads them
skopeo.py     Debian's `skopeo`
filestore.py  The image files: content-addressed ext4 files, cached layers, staging
"""
