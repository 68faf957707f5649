from deploy.brats_seg_app.app import main

if __name__ == "__main__":
    main()
