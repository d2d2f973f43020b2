"""Zeek's file analysis framework as far as the default configuration logs it (files.log).

``record``: the files.log schema and its hash/extract column extensions; ``state``: one file's
state (:class:`FileState`) that protocol analyzers feed; ``magic``: MIME sniffing of the
beginning of a file; ``utils``: file names from protocol headers; ``extract``: the extraction
analyzer (``extract-all-files``) and the sink that writes its files.  Sans-I/O like the analyzers:
no globals beyond caches, nothing of the engine.
"""

from analysis.files.extract import DirectoryExtractSink, Extractor, extract_name
from analysis.files.magic import BOF_SIZE, sniff
from analysis.files.record import FilesInfo, files_record_type
from analysis.files.state import FileOptions, FileState, is_local_default, write_file
from analysis.files.utils import filename_from_disposition

__all__ = ["BOF_SIZE", "DirectoryExtractSink", "Extractor", "FileOptions", "FileState", "FilesInfo",
           "extract_name", "filename_from_disposition", "files_record_type", "is_local_default", "sniff",
           "write_file"]
